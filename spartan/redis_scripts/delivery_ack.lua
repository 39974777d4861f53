-- delivery_ack: a user has a conversation up to an offset; drop what every member has.
--
-- KEYS[1]  meta hash of the conversation (fields: last, epoch)
-- KEYS[2]  log list (consecutive offsets ending at last)
-- KEYS[3]  acks hash: user -> acknowledged offset
-- ARGV[1]  epoch the offset belongs to (an ack of another epoch is ignored)
-- ARGV[2]  offset the user has everything up to (clamped to last)
-- ARGV[3]  the user
-- ARGV[4..] every member the log is kept for (a member without an ack holds it all)
-- Returns {acked_offset, trimmed_count}: the user's acknowledged offset after this
-- call (0 if the epoch did not match) and how many messages left the log.

local meta = redis.call('HMGET', KEYS[1], 'last', 'epoch')
if not meta[1] or meta[2] ~= ARGV[1] then
  return {0, 0}
end
local last = tonumber(meta[1])
local offset = math.min(tonumber(ARGV[2]), last)
local acked = tonumber(redis.call('HGET', KEYS[3], ARGV[3]) or '0')
if offset > acked then
  redis.call('HSET', KEYS[3], ARGV[3], offset)
  acked = offset
end

local everyone = last
for i = 4, #ARGV do
  local position = tonumber(redis.call('HGET', KEYS[3], ARGV[i]) or '0')
  if position < everyone then
    everyone = position
  end
end
local held = redis.call('LLEN', KEYS[2])
local first = last - held + 1
local trimmed = 0
if held > 0 and everyone >= first then
  trimmed = math.min(everyone - first + 1, held)
  if trimmed == held then
    redis.call('DEL', KEYS[2])
  else
    redis.call('LTRIM', KEYS[2], trimmed, -1)
  end
end
return {acked, trimmed}
