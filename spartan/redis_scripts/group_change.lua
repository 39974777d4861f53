-- Add or remove one group member atomically, bump the group's membership version and keep the change's record.
-- Every key has the group's hash tag (one cluster slot); the members' reverse index is the caller's to update.
-- KEYS[1]  set of the group's members
-- KEYS[2]  the group's membership version (integer string)
-- KEYS[3]  list of the group's signed change records, oldest first
-- ARGV[1]  "add" | "remove"
-- ARGV[2]  group name
-- ARGV[3]  acting user (must be a member)
-- ARGV[4]  user to add or remove
-- ARGV[5]  most members a group may have ("add" only)
-- ARGV[6]  the serialized MembershipRecord of this change ("": none, the chain is not extended)
-- ARGV[7]  the version the record names
-- ARGV[8]  the member list the record names, sorted, joined by "\n"
-- ARGV[9]  the chain's last record as the caller read it (the record must still be last)
-- ARGV[10] the caller's verdict on the record against ARGV[9]: "ok", "stale" or "unsigned"
-- Returns  {"ok", version, members} (the state this change made, read in the same step) or
--          {"err", reason} with reason one of
--          "no_group", "not_member", "already_member", "not_in_group", "last_member", "full",
--          "stale" (the record does not follow the chain's last record, or that changed meanwhile),
--          "unsigned" (not signed by its actor), "mismatch" (the record names other members)
local version = redis.call('GET', KEYS[2])
if not version then return {'err', 'no_group'} end
if redis.call('SISMEMBER', KEYS[1], ARGV[3]) == 0 then return {'err', 'not_member'} end
if ARGV[1] == 'add' then
  if redis.call('SISMEMBER', KEYS[1], ARGV[4]) == 1 then return {'err', 'already_member'} end
  if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[5]) then return {'err', 'full'} end
else
  if redis.call('SISMEMBER', KEYS[1], ARGV[4]) == 0 then return {'err', 'not_in_group'} end
  if redis.call('SCARD', KEYS[1]) == 1 then return {'err', 'last_member'} end
end
if ARGV[6] ~= '' then
  if tonumber(version) + 1 ~= tonumber(ARGV[7]) then return {'err', 'stale'} end
  if redis.call('LINDEX', KEYS[3], -1) ~= ARGV[9] then return {'err', 'stale'} end
  if ARGV[10] ~= 'ok' then return {'err', ARGV[10]} end
  local after = {}
  for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    if member ~= ARGV[4] then table.insert(after, member) end
  end
  if ARGV[1] == 'add' then table.insert(after, ARGV[4]) end
  table.sort(after)
  if table.concat(after, '\n') ~= ARGV[8] then return {'err', 'mismatch'} end
  redis.call('RPUSH', KEYS[3], ARGV[6])
end
if ARGV[1] == 'add' then
  redis.call('SADD', KEYS[1], ARGV[4])
else
  redis.call('SREM', KEYS[1], ARGV[4])
end
return {'ok', redis.call('INCR', KEYS[2]), redis.call('SMEMBERS', KEYS[1])}
