-- requeue_failed.lua: move the oldest copy of one failed event or task back to the
-- queue it came from, with its oldest failed record, in one atomic step.
--
-- KEYS[1]  the failed list
-- KEYS[2]  its reasons hash (text -> JSON array of records, or a plain reason string)
-- KEYS[3]  the queue to push it into (a watcher's input queue, a worker's todo queue)
-- KEYS[4]  with ARGV[2] 'attempts': the watcher's attempts hash, forgotten for the
--          event (a fresh start); with ARGV[2] 'set': the todo queue's dedup set
-- ARGV[1]  the text
-- ARGV[2]  'attempts', 'set' or 'none' (what KEYS[4] is; no KEYS[4] with 'none')
-- ARGV[3]  with 'set': the score of a new set member (unix time, whole seconds)
-- Returns  1 when pushed; 2 when taken out of the failed list but not pushed, because
--          the set already holds the task (it is queued or taken already); 0 when no
--          copy is left in the failed list (nothing done).
--          An error reply, before any write, when a key holds the wrong type.
-- Touches  KEYS[1] (LREM), KEYS[2] (HSET or HDEL), KEYS[3] (LPUSH), KEYS[4] (HDEL,
--          or ZADD NX).
--
-- A failed list is LPUSHed, so its oldest copy is the rightmost: LREM with count -1.
-- Pushed with LPUSH, as producers and resc do: it waits behind what is queued.

local failed, reasons, queue, extra = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local text, mode, score = ARGV[1], ARGV[2], ARGV[3]

local expected = {{failed, 'list'}, {reasons, 'hash'}, {queue, 'list'}}
if mode == 'attempts' then
  expected[4] = {extra, 'hash'}
elseif mode == 'set' then
  expected[4] = {extra, 'zset'}
end
for _, check in ipairs(expected) do
  local actual = redis.call('TYPE', check[1]).ok
  if actual ~= check[2] and actual ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. check[1] .. ' holds a ' .. actual .. ', not a ' .. check[2])
  end
end

if redis.call('LREM', failed, -1, text) == 0 then
  return 0
end

-- The oldest record goes with the copy; a plain string (no records) goes whole.
local value = redis.call('HGET', reasons, text)
if value then
  local ok, records = pcall(cjson.decode, value)
  if ok and type(records) == 'table' and string.sub(value, 1, 1) == '[' and #records > 1 then
    table.remove(records, 1)
    redis.call('HSET', reasons, text, cjson.encode(records))
  else
    redis.call('HDEL', reasons, text)
  end
end

if mode == 'attempts' then
  redis.call('HDEL', extra, text)
elseif mode == 'set' and redis.call('ZADD', extra, 'NX', score, text) == 0 then
  return 2
end
redis.call('LPUSH', queue, text)
return 1
