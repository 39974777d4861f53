-- history_touch: where a conversation's history stands, without transferring it; touches the LRU.
--
-- KEYS[1]  meta hash of the conversation (fields: last, epoch)
-- KEYS[2]  log list of the conversation
-- KEYS[3]  global LRU sorted set: member = conversation id, score = use tick
-- KEYS[4]  global use counter (INCR), the LRU clock
-- ARGV[1]  conversation id (the LRU member)
-- Returns {last_offset, epoch, held}: newest offset ever assigned (0 and epoch ""
--   if the conversation is unknown; nothing is created then) and how many messages
--   the log holds (they end at last_offset). Same LRU effect as history_read.

local meta = redis.call('HMGET', KEYS[1], 'last', 'epoch')
if not meta[1] then
  return {0, '', 0}
end
if redis.call('ZSCORE', KEYS[3], ARGV[1]) then
  redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), ARGV[1])
end
return {tonumber(meta[1]), meta[2] or '', redis.call('LLEN', KEYS[2])}
