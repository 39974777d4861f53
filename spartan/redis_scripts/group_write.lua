-- Write a new group's members and its first change record in one step.
-- KEYS[1]  set of the group's members
-- KEYS[2]  the group's membership version (unused: passed so every group script names the same keys)
-- KEYS[3]  list of the group's signed change records, oldest first
-- ARGV[1]  the serialized first MembershipRecord ("": none, e.g. a config group whose genesis is written apart)
-- ARGV[2..] the members
-- Returns  the number of members added
if ARGV[1] ~= '' then redis.call('RPUSH', KEYS[3], ARGV[1]) end
if #ARGV < 2 then return 0 end
return redis.call('SADD', KEYS[1], unpack(ARGV, 2))
