-- delivery_append: keep one message in its conversation's delivery log and publish it.
--
-- All keys share the conversation's hash tag (one cluster slot).
-- KEYS[1]  meta hash of the conversation (fields: last, epoch, replid of the node that appended
--          last); never expires, so a returning client can be told exactly how many messages expired
-- KEYS[2]  log list: stored message encodings, oldest first, consecutive offsets
--          ending at `last`
-- KEYS[3]  acks hash: user -> newest offset that user has acknowledged; never expires
--          (one field per member), so an acknowledged message is never reported missing
-- ARGV[1]  serialized spartan.v1.Message without offset/epoch/sent_at_us
-- ARGV[2]  most messages kept (older ones are dropped; readers learn how many)
-- ARGV[3]  retention in seconds: the log expires this long after the last append
-- ARGV[4]  sender, who has the message already ("" for none): their ack moves to the
--          new offset when it was right behind it
-- ARGV[5..] sharded pub/sub channels of the conversation's slot that receive the stored bytes (SPUBLISH)
-- Returns {offset, epoch, sent_at_us, dropped_count}
--
-- The stored bytes are ARGV[1] followed by the protobuf encodings of field 8
-- (offset), field 9 (epoch) and field 10 (sent_at_us): a later occurrence of a
-- scalar field wins, so subscribers parse a complete message.

--!include _varint

local time = redis.call('TIME')
local sent_at_us = tonumber(time[1]) * 1000000 + tonumber(time[2])
local offset = redis.call('HINCRBY', KEYS[1], 'last', 1)
local epoch = redis.call('HGET', KEYS[1], 'epoch')

-- Replication is asynchronous: a replica promoted after its primary died may lack the newest
-- appends, and would hand out again offsets that readers already have (they would skip the new
-- message as one they have). The meta remembers the replication id of the node that appended
-- last; a node whose id differs and that has been a replica since (master_replid2 is set) starts
-- a new epoch, which readers take as "may have lost messages": they say so and read the log again.
local replication = redis.call('INFO', 'replication')
local replid = string.match(replication, 'master_replid:(%x+)') or ''
local replid2 = string.match(replication, 'master_replid2:(%x+)') or ''
local appended_by = redis.call('HGET', KEYS[1], 'replid')
local promoted = appended_by and appended_by ~= replid and string.find(replid2, '[^0]') ~= nil
if appended_by ~= replid then
  redis.call('HSET', KEYS[1], 'replid', replid)
end
if not epoch or promoted then
  epoch = string.format('%x%05x', tonumber(time[1]), tonumber(time[2]))
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end

local stored = ARGV[1]
  .. '\64' .. varint(offset)
  .. '\74' .. varint(#epoch) .. epoch
  .. '\80' .. varint(sent_at_us)
local kept = tonumber(ARGV[2])
local dropped = 0
local length = redis.call('RPUSH', KEYS[2], stored)
if length > kept then
  dropped = length - kept
  redis.call('LTRIM', KEYS[2], dropped, -1)
end
local retention = tonumber(ARGV[3])
redis.call('EXPIRE', KEYS[2], retention)

if ARGV[4] ~= '' then
  local acked = tonumber(redis.call('HGET', KEYS[3], ARGV[4]) or '0')
  if acked == offset - 1 then
    redis.call('HSET', KEYS[3], ARGV[4], offset)
  end
end

for i = 5, #ARGV do
  redis.call('SPUBLISH', ARGV[i], stored)
end
return {offset, epoch, sent_at_us, dropped}
