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

--!include _token_bucket

return take_tokens(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]) or 1)
