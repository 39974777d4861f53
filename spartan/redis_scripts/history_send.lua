-- history_send: a 1:1 send's rate-limit check and, when it passes, its append and
-- publish, in one round trip (the gateway's hot path; other callers use
-- token_bucket.lua and history_append.lua, which do the same two steps apart).
--
-- KEYS[1..4]  history_append.lua's KEYS[1..4] (the conversation's meta and log, the
--             global LRU and its clock)
-- KEYS[5]     the sender's token bucket, token_bucket.lua's KEYS[1]
-- ARGV[1..3]  token_bucket.lua's ARGV[1..3] (rate per second, burst, cost)
-- ARGV[4..8]  history_append.lua's ARGV[1..5] (payload, per-conversation capacity,
--             global capacity, conversation id, key prefix)
-- ARGV[9..]   pub/sub channels that receive the stored bytes
-- Returns token_bucket.lua's {allowed, remaining, retry_after, limit}, followed, when
-- allowed, by history_append.lua's {offset, epoch, sent_at_us, evicted_count}. A
-- rejected send stores and publishes nothing.
--
-- KEYS[5] hashes to the sender's cluster slot and KEYS[1..4] to the history's
-- ({hist}): on a single Redis (what Spartan runs on) that is fine; a Redis Cluster
-- would need the send bucket moved under {hist} first.

--!include _token_bucket
--!include _history_append

local decision = take_tokens(KEYS[5], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]) or 1)
if decision[1] == 0 then
  return decision
end
local stored = append_message(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]),
                              ARGV[7], ARGV[8], {unpack(ARGV, 9)})
return {decision[1], decision[2], decision[3], decision[4], stored[1], stored[2], stored[3], stored[4]}
