-- cache_get: read one entry of a shared LRU cache and make it the most recently used.
--
-- KEYS[1]  LRU sorted set: member = entry key, score = use tick
-- KEYS[2]  hash of values: field = entry key
-- KEYS[3]  hash of expiry times in ms since the Unix epoch (Redis TIME); absent: no expiry
-- KEYS[4]  use counter (INCR), the LRU clock
-- ARGV[1]  entry key
-- Returns the stored value, or nil if the entry is absent or expired (an expired
-- entry is removed).

local value = redis.call('HGET', KEYS[2], ARGV[1])
if not value then
  return false
end
local expires_at = redis.call('HGET', KEYS[3], ARGV[1])
if expires_at then
  local time = redis.call('TIME')
  local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  if now_ms >= tonumber(expires_at) then
    redis.call('HDEL', KEYS[2], ARGV[1])
    redis.call('HDEL', KEYS[3], ARGV[1])
    redis.call('ZREM', KEYS[1], ARGV[1])
    return false
  end
end
redis.call('ZADD', KEYS[1], redis.call('INCR', KEYS[4]), ARGV[1])
return value
