-- _history_append: history_append.lua's work as a function, so that history_send.lua
-- (rate check, then append) stores and publishes exactly the same way.
-- A fragment pasted into scripts with `--!include _history_append`; not a script itself.
-- append_message(meta, log, lru, clock, payload, per_conversation, max_conversations,
--                conversation, prefix, channels) takes history_append.lua's KEYS[1..4],
-- its ARGV[1..5] (numbers as numbers) and a table of channels, and returns
-- {offset, epoch, sent_at_us, evicted_count} as history_append.lua documents.

--!include _varint

local function append_message(meta, log, lru, clock, payload, per_conversation, max_conversations,
                              conversation, prefix, channels)
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

  for _, channel in ipairs(channels) do
    redis.call('PUBLISH', channel, stored)
  end

  return {offset, epoch, sent_at_us, evicted}
end
