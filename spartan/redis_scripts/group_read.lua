-- A group as of one moment: its version, members and chain of change records.
-- KEYS[1]  set of the group's members
-- KEYS[2]  the group's membership version (integer string)
-- KEYS[3]  list of the group's signed change records, oldest first
-- ARGV     none
-- Returns  {version or false (no such group), members, records}
return {redis.call('GET', KEYS[2]), redis.call('SMEMBERS', KEYS[1]), redis.call('LRANGE', KEYS[3], 0, -1)}
