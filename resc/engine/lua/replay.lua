-- replay.lua: move the oldest failed event back to its input queue, forgetting why it
-- failed and how often it was interrupted, so that it gets a fresh start.
--
-- KEYS[1]  failed queue
-- KEYS[2]  input queue
-- KEYS[3]  failed reasons hash
-- KEYS[4]  attempts hash
-- Returns  the event moved, or false when the failed queue is empty.
-- Touches  KEYS[1] (RPOP), KEYS[2] (LPUSH), KEYS[3] and KEYS[4] (HDEL).

local event = redis.call('RPOP', KEYS[1])
if not event then
  return false
end
redis.call('LPUSH', KEYS[2], event)
redis.call('HDEL', KEYS[3], event)
redis.call('HDEL', KEYS[4], event)
return event
