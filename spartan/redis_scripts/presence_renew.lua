-- Record or renew session leases, expiring at Redis TIME + ttl.
-- KEYS[1]  sorted set of leases: member "<user>|<gateway>|<session>", score = expiry (ms since epoch)
-- ARGV[1]  ttl in milliseconds
-- ARGV[2..n] lease members to renew
-- Returns  the number of leases written.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = now_ms + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], expiry, ARGV[i])
end
return #ARGV - 1
