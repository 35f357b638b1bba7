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

-- wrong_type and failure_records come from lib/key_types.lua and lib/failure_records.lua, put in front.

local wrong = wrong_type({'list', 'list', 'hash'})
if wrong then
  return wrong
end

local event = redis.call('RPOP', KEYS[1])
if not event then
  return false
end
redis.call('LPUSH', KEYS[2], event)
local records = failure_records(KEYS[3], event)
if records and #records > 1 then
  table.remove(records, 1)
  redis.call('HSET', KEYS[3], event, cjson.encode(records))
else
  redis.call('HDEL', KEYS[3], event)
end
return event
