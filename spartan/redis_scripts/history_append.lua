-- history_append: store one message at the next offset of its conversation and publish it.
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
-- ARGV[6..] pub/sub channels that receive the stored bytes
-- Returns {offset, epoch, sent_at_us, evicted_count}
--
-- The stored bytes are ARGV[1] followed by the protobuf encodings of field 8
-- (offset, varint), field 9 (epoch, string) and field 10 (sent_at_us, varint):
-- protobuf parsers let a later occurrence of a scalar field win.

--!include _varint

local time = redis.call('TIME')
local sent_at_us = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tick = redis.call('INCR', KEYS[4])

local function new_epoch()
  return string.format('%x%05x-%x', tonumber(time[1]), tonumber(time[2]), tick)
end

local conversation = ARGV[4]
local offset = redis.call('HINCRBY', KEYS[1], 'last', 1)
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = new_epoch()
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end

local is_new = redis.call('ZADD', KEYS[3], tick, conversation) == 1  -- 1: added, 0: score updated

local stored = ARGV[1]
  .. '\64' .. varint(offset)
  .. '\74' .. varint(#epoch) .. epoch
  .. '\80' .. varint(sent_at_us)
if redis.call('RPUSH', KEYS[2], stored) > tonumber(ARGV[2]) then
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
end

local evicted = 0
if is_new then
  local capacity = tonumber(ARGV[3])
  local prefix = ARGV[5]
  while redis.call('ZCARD', KEYS[3]) > capacity do
    local victim = redis.call('ZPOPMIN', KEYS[3], 1)[1]
    redis.call('DEL', prefix .. 'log:' .. victim)
    redis.call('HSET', prefix .. 'meta:' .. victim, 'epoch',
      new_epoch() .. '-' .. evicted)
    evicted = evicted + 1
  end
end

for i = 6, #ARGV do
  redis.call('PUBLISH', ARGV[i], stored)
end

return {offset, epoch, sent_at_us, evicted}
