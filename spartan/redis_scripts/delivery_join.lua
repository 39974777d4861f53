-- delivery_join: members who join a conversation start at its newest offset, so they
-- are not handed (nor counted as missing) what was sent before they joined.
--
-- KEYS[1]  meta hash of the conversation (fields: last, epoch)
-- KEYS[3]  acks hash: user -> acknowledged offset  (KEYS[2], the log, is unused:
--          passed so every delivery script names the same keys)
-- ARGV[1..] the users who joined
-- Returns the offset they start after.

local last = tonumber(redis.call('HGET', KEYS[1], 'last') or '0')
for i = 1, #ARGV do
  redis.call('HSET', KEYS[3], ARGV[i], last)
end
return last
