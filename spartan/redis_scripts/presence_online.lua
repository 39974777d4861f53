-- Drop expired leases and list the live ones.
-- KEYS[1]  sorted set of leases (see presence_renew.lua)
-- ARGV     none
-- Returns  the members whose lease has not expired at Redis TIME.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
return redis.call('ZRANGEBYSCORE', KEYS[1], now_ms + 1, '+inf')
