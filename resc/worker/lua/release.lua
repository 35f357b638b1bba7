-- release.lua: give a task in hand back to its queue, to be taken next.
--
-- KEYS[1]  the worker's taken list
-- KEYS[2]  the queue
-- ARGV[1]  the task
-- Returns  1 when given back; 0 when the task was no longer in the taken list.
-- Touches  KEYS[1] (LREM), KEYS[2] (RPUSH).
--
-- Workers take from the right end of the queue: RPUSH puts the task where it is taken
-- first.

if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
