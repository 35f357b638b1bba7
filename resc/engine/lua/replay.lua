-- replay.lua: move the oldest failed event back to its input queue, with the oldest
-- record of why that text failed, so that it gets a fresh start.
--
-- KEYS[1]  failed queue
-- KEYS[2]  input queue
-- KEYS[3]  failed reasons hash (event -> JSON array of records, see resc/core/failures.py)
-- Returns  the event moved, or false when the failed queue is empty; an error reply,
--          before any write, when a key holds the wrong type.
-- Touches  KEYS[1] (RPOP), KEYS[2] (LPUSH), KEYS[3] (HSET, HDEL).
--
-- Identical failed events share one field, one record per copy: only the oldest record
-- goes, so that the other copies keep theirs. A value that is not a JSON array (as
-- resc wrote before) stands for one copy.

for index, wanted in ipairs({'list', 'list', 'hash'}) do
  local actual = redis.call('TYPE', KEYS[index]).ok
  if actual ~= wanted and actual ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. KEYS[index] .. ' holds a ' .. actual
      .. ', where resc keeps a ' .. wanted)
  end
end

local event = redis.call('RPOP', KEYS[1])
if not event then
  return false
end
redis.call('LPUSH', KEYS[2], event)
local value = redis.call('HGET', KEYS[3], event)
local records
if value and string.sub(value, 1, 1) == '[' then
  local ok, decoded = pcall(cjson.decode, value)
  if ok and type(decoded) == 'table' then
    records = decoded
  end
end
if records and #records > 1 then
  table.remove(records, 1)
  redis.call('HSET', KEYS[3], event, cjson.encode(records))
else
  redis.call('HDEL', KEYS[3], event)
end
return event
