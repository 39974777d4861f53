-- history_append: store one message at the next offset of its conversation (the recent-history cache).
--
-- KEYS[1]  meta hash of the conversation (fields: last, epoch); never evicted
-- KEYS[2]  log list of the conversation (stored message encodings, oldest first)
-- KEYS[3]  global LRU sorted set: member = conversation id, score = use tick
-- KEYS[4]  global use counter (INCR), the LRU clock
-- ARGV[1]  serialized spartan.v1.Message without offset/epoch/sent_at_us
-- ARGV[2]  per-conversation capacity (messages kept in the log)
-- ARGV[3]  global capacity (conversations kept)
-- ARGV[4]  conversation id (the LRU member)
-- ARGV[5]  key prefix shared by every history key, e.g. "sp:h:{hist}:"; evicted
--          conversations' keys are "<prefix>meta:<id>" and "<prefix>log:<id>"
--          (same hash tag, so same cluster slot as KEYS)
-- Returns {offset, epoch, sent_at_us, evicted_count}
--
-- The stored bytes are ARGV[1] followed by the protobuf encodings of field 8
-- (offset, varint), field 9 (epoch, string) and field 10 (sent_at_us, varint):
-- protobuf parsers let a later occurrence of a scalar field win.

--!include _varint

local function append_message(meta, log, lru, clock, payload, per_conversation, max_conversations,
                              conversation, prefix)
  local time = redis.call('TIME')
  local sent_at_us = tonumber(time[1]) * 1000000 + tonumber(time[2])
  local tick = redis.call('INCR', clock)

  local function new_epoch()
    return string.format('%x%05x-%x', tonumber(time[1]), tonumber(time[2]), tick)
  end

  local offset = redis.call('HINCRBY', meta, 'last', 1)
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    epoch = new_epoch()
    redis.call('HSET', meta, 'epoch', epoch)
  end

  local is_new = redis.call('ZADD', lru, tick, conversation) == 1  -- 1: added, 0: score updated

  local stored = payload
    .. '\64' .. varint(offset)
    .. '\74' .. varint(#epoch) .. epoch
    .. '\80' .. varint(sent_at_us)
  if redis.call('RPUSH', log, stored) > per_conversation then
    redis.call('LTRIM', log, -per_conversation, -1)
  end

  local evicted = 0
  if is_new then
    while redis.call('ZCARD', lru) > max_conversations do
      local victim = redis.call('ZPOPMIN', lru, 1)[1]
      redis.call('DEL', prefix .. 'log:' .. victim)
      redis.call('HSET', prefix .. 'meta:' .. victim, 'epoch',
        new_epoch() .. '-' .. evicted)
      evicted = evicted + 1
    end
  end

  return {offset, epoch, sent_at_us, evicted}
end

return append_message(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]),
                      ARGV[4], ARGV[5])
