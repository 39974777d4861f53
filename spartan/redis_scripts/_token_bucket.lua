-- _token_bucket: the token bucket of token_bucket.lua as a function, so that a script
-- which does more (history_send.lua: check, then append) takes tokens the same way.
-- A fragment pasted into scripts with `--!include _token_bucket`; not a script itself.
-- take_tokens(key, rate, burst, cost) returns {allowed, remaining, retry_after, limit}
-- exactly as token_bucket.lua documents them.

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
