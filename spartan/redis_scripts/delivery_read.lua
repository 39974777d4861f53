-- delivery_read: a page of a conversation's delivery log after a position.
--
-- KEYS[1]  meta hash of the conversation (fields: last, epoch)
-- KEYS[2]  log list (consecutive offsets ending at last)
-- KEYS[3]  acks hash: user -> acknowledged offset
-- ARGV[1]  after_offset: messages with offset > after_offset; -1: after ARGV[3]'s
--          acknowledged offset (0 when that user has none)
-- ARGV[2]  limit: at most this many messages, oldest first
-- ARGV[3]  user whose acknowledged offset -1 stands for
-- Returns {last_offset, epoch, first_offset, after_offset, acked_offset, messages}
--   last_offset: newest offset ever assigned (0 and epoch "" if the conversation is
--   unknown); first_offset: oldest held (0 if none held); after_offset: the position
--   actually read after; acked_offset: ARGV[3]'s acknowledged offset (0: none);
--   messages: the selected stored messages framed as field 1 of
--   spartan.v1.HistoryResponse (tag 0x0A, varint length, bytes), concatenated.

--!include _varint

local meta = redis.call('HMGET', KEYS[1], 'last', 'epoch')
local acked = tonumber(redis.call('HGET', KEYS[3], ARGV[3]) or '0')
local after = tonumber(ARGV[1])
if after < 0 then
  after = acked
end
if not meta[1] then
  return {0, '', 0, after, acked, ''}
end
local last = tonumber(meta[1])
local epoch = meta[2] or ''
local held = redis.call('LLEN', KEYS[2])
if held == 0 then
  return {last, epoch, 0, after, acked, ''}
end
local first = last - held + 1
local start_offset = math.max(after + 1, first)
if start_offset > last then
  return {last, epoch, first, after, acked, ''}
end
local start_index = start_offset - first
local stop_index = math.min(held - 1, start_index + tonumber(ARGV[2]) - 1)
local entries = redis.call('LRANGE', KEYS[2], start_index, stop_index)
local framed = {}
for i = 1, #entries do
  framed[#framed + 1] = '\10' .. varint(#entries[i]) .. entries[i]
end
return {last, epoch, first, after, acked, table.concat(framed)}
