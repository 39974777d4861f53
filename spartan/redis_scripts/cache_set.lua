-- cache_set: store one entry of a shared LRU cache as most recently used, evicting the
-- least recently used entries beyond capacity.
--
-- KEYS[1]  LRU sorted set: member = entry key, score = use tick
-- KEYS[2]  hash of values: field = entry key
-- KEYS[3]  hash of expiry times in ms since the Unix epoch (Redis TIME)
-- KEYS[4]  use counter (INCR), the LRU clock
-- ARGV[1]  entry key
-- ARGV[2]  value (bytes)
-- ARGV[3]  capacity (entries)
-- ARGV[4]  time to live in ms (0: no expiry)
-- Returns the number of entries evicted.

local key = ARGV[1]
redis.call('HSET', KEYS[2], key, ARGV[2])
local ttl_ms = tonumber(ARGV[4])
if ttl_ms > 0 then
  local time = redis.call('TIME')
  local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  redis.call('HSET', KEYS[3], key, string.format('%d', now_ms + ttl_ms))
else
  redis.call('HDEL', KEYS[3], key)
end

local existed = redis.call('ZSCORE', KEYS[1], key)
redis.call('ZADD', KEYS[1], redis.call('INCR', KEYS[4]), key)

local evicted = 0
if not existed then
  local capacity = tonumber(ARGV[3])
  while redis.call('ZCARD', KEYS[1]) > capacity do
    local victim = redis.call('ZPOPMIN', KEYS[1], 1)[1]
    redis.call('HDEL', KEYS[2], victim)
    redis.call('HDEL', KEYS[3], victim)
    evicted = evicted + 1
  end
end
return evicted
