-- token_bucket: take `cost` tokens from one (user, api) bucket if it holds them.
--
-- KEYS[1]  the bucket hash, e.g. "sp:rl:{alice}:send" (hash tag = user, so one
--          cluster slot per user); fields: tokens (float), ts (Redis TIME, µs)
-- ARGV[1]  refill rate in tokens per second (float, > 0)
-- ARGV[2]  burst: bucket capacity in tokens (integer, >= 1)
-- ARGV[3]  cost: tokens this call takes (integer, >= 1; default 1)
-- Returns {allowed, remaining, retry_after, limit}
--   allowed      1 if the call may proceed, 0 if it is rejected
--   remaining    whole tokens left after this call (floor)
--   retry_after  seconds until `cost` tokens are available, as a string with
--                millisecond precision rounded up ("0.000" when allowed;
--                "-1" when cost > burst, i.e. never)
--   limit        the burst in force
--
-- The clock is Redis `TIME` only, never the caller's, so gateway replicas with
-- skewed clocks share one timeline. Refill is continuous (fractional tokens).
-- The bucket never holds more than the burst in force, so lowering the burst
-- (config reload) takes effect at once and raising it grants nothing extra: the
-- bucket refills up to the new size at the normal rate. A clock that moved back
-- (failover to a replica) refills nothing until it moves forward again.
-- The key expires once the bucket would be full again (+1 s): an absent key
-- reads as a full bucket, so idle users cost no memory.
-- Scripts are effect-replicated (Redis >= 5 default, the only mode in 7), so
-- reading TIME before writing is allowed and replicas get the computed values.

local function seconds_text(us)
  local ms = math.ceil(us / 1000)
  return string.format('%d.%03d', math.floor(ms / 1000), ms % 1000)
end

local function take_tokens(key, rate, burst, cost)
  local clock = redis.call('TIME')
  local now_us = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

  local state = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(state[1])
  local last_us = tonumber(state[2])
  if tokens == nil or last_us == nil then
    tokens = burst
    last_us = now_us
  end

  local elapsed_us = now_us - last_us
  if elapsed_us < 0 then
    elapsed_us = 0
  end
  tokens = math.min(burst, tokens + elapsed_us * rate / 1000000)

  if cost > burst then
    return {0, math.floor(tokens), '-1', burst}
  end

  if tokens < cost then
    -- Nothing changes: the stored (tokens, ts) pair still describes the bucket.
    return {0, math.floor(tokens), seconds_text((cost - tokens) * 1000000 / rate), burst}
  end

  tokens = tokens - cost
  redis.call('HSET', key, 'tokens', string.format('%.17g', tokens), 'ts', string.format('%.0f', now_us))
  redis.call('EXPIRE', key, math.ceil((burst - tokens) / rate) + 1)
  return {1, math.floor(tokens), '0.000', burst}
end

return take_tokens(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]) or 1)
