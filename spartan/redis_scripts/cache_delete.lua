-- cache_delete: remove one entry of a shared LRU cache.
--
-- KEYS[1]  LRU sorted set: member = entry key, score = use tick
-- KEYS[2]  hash of values: field = entry key
-- KEYS[3]  hash of expiry times
-- ARGV[1]  entry key
-- Returns 1 if the entry was there, else 0.

redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return redis.call('ZREM', KEYS[1], ARGV[1])
