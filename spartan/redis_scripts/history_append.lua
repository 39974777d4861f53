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

--!include _history_append

return append_message(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]),
                      ARGV[4], ARGV[5], {unpack(ARGV, 6)})
