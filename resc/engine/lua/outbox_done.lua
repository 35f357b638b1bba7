-- outbox_done.lua: on a Redis Cluster, forget an outbox entry whose results were all
-- applied in their slots (apply.lua), and move to the failed queue the events of which
-- a result could not be pushed there (a key of the wrong type), in one atomic step.
--
-- KEYS[1]  the outbox that holds the entry (an instance's, or the watcher's outbox of
--          entries whose writer is gone: see recover.lua)
-- KEYS[2]  the watcher's failed queue
-- KEYS[3]  the failed reasons hash (event -> JSON array of records, resc/core/failures.py)
-- ARGV[1]  the entry's batch id
-- ARGV[2..] pairs: event, reason, for the events to move to the failed queue
-- Returns  1 when the entry was removed here; 0 when it was not there (another instance
--          moved it away or removed it first: nothing done). An error reply, before any
--          write, when a key holds the wrong type.
-- Touches  KEYS[1] (HDEL), KEYS[2] (LPUSH), KEYS[3] (HSET).
--
-- wrong_type and add_failure_record come from lib/key_types.lua and
-- lib/failure_records.lua, which are put in front. Only the run that removes the entry
-- records the failures, so that each is recorded once.

local wrong = wrong_type({'hash', 'list', 'hash'})
if wrong then
  return wrong
end
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
if #ARGV > 1 then
  local t = redis.call('TIME')
  local now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
  for i = 2, #ARGV, 2 do
    redis.call('LPUSH', KEYS[2], ARGV[i])
    add_failure_record(KEYS[3], ARGV[i], {reason = ARGV[i + 1], time = now, attempts = 1})
  end
end
return 1
