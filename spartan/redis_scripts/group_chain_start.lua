-- Start a group's chain of change records with the operator's genesis, unless it has one.
-- KEYS[1]  list of the group's signed change records, oldest first
-- ARGV[1]  the serialized genesis MembershipRecord
-- Returns  1 if the genesis was written, 0 if the chain already had records
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
return 1
