-- history_read: the held messages of one conversation after an offset; touches the LRU.
--
-- KEYS[1]  meta hash of the conversation (fields: last, epoch)
-- KEYS[2]  log list of the conversation (stored message encodings, oldest first)
-- KEYS[3]  global LRU sorted set: member = conversation id, score = use tick
-- KEYS[4]  global use counter (INCR), the LRU clock
-- ARGV[1]  conversation id (the LRU member)
-- ARGV[2]  after_offset: return only messages with offset > after_offset
-- ARGV[3]  limit: at most this many messages, oldest first (0: all held)
-- Returns {last_offset, epoch, first_offset, messages}
--   last_offset: newest offset ever assigned (0 and epoch "" if the conversation
--   is unknown; nothing is created then); first_offset: oldest held (0 if empty);
--   messages: the selected stored messages framed as field 1 of
--   spartan.v1.HistoryResponse (tag 0x0A, varint length, bytes), concatenated,
--   i.e. one bulk string the caller parses in one pass ("" if none).
--
-- The log holds consecutive offsets ending at last_offset, so which entries to
-- return follows from index arithmetic; nothing is parsed here. One framed
-- string instead of an array keeps the client from decoding one RESP reply per
-- message, which dominated the cost of a read.

--!include _varint

local meta = redis.call('HMGET', KEYS[1], 'last', 'epoch')
if not meta[1] then
  return {0, '', 0, ''}
end
local last = tonumber(meta[1])
local epoch = meta[2] or ''

if redis.call('ZSCORE', KEYS[3], ARGV[1]) then
  redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), ARGV[1])
end

local held = redis.call('LLEN', KEYS[2])
if held == 0 then
  return {last, epoch, 0, ''}
end
local first = last - held + 1
local after = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])

local start_offset = math.max(after + 1, first)
if start_offset > last then
  return {last, epoch, first, ''}
end
local start_index = start_offset - first
local stop_index = held - 1
if limit > 0 then
  stop_index = math.min(stop_index, start_index + limit - 1)
end
local entries = redis.call('LRANGE', KEYS[2], start_index, stop_index)
local framed = {}
for i = 1, #entries do
  framed[#framed + 1] = '\10' .. varint(#entries[i]) .. entries[i]
end
return {last, epoch, first, table.concat(framed)}
