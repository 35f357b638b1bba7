-- reap.lua: put the tasks of a worker whose heartbeat has expired back into the
-- queue, and forget that worker.
--
-- KEYS[1]  the queue
-- KEYS[2]  that worker's taken list
-- KEYS[3]  that worker's heartbeat key
-- KEYS[4]  the set of the queue's worker ids
-- ARGV[1]  that worker's id
-- ARGV[2]  '1': the worker itself is leaving: reap even though its heartbeat is alive,
--          and delete the heartbeat; '0': only a worker whose heartbeat has expired
-- Returns  the number of tasks put back, or -1 when the heartbeat is alive (nothing
--          done).
-- Touches  KEYS[1] (RPUSH), KEYS[2] (DEL), KEYS[3] (DEL), KEYS[4] (SREM).
--
-- Atomic, so that a worker is reaped once even when several reapers run: the second
-- finds the taken list empty. The heartbeat is checked here, not by the caller, so
-- that a worker whose heartbeat came back meanwhile is left alone.

if ARGV[2] ~= '1' and redis.call('EXISTS', KEYS[3]) == 1 then
  return -1
end
-- The taken list holds the oldest task on its right, as the queue does: pushing from
-- the newest to the oldest puts the oldest on the queue's right end, taken first.
local tasks = redis.call('LRANGE', KEYS[2], 0, -1)
local n = #tasks
local chunk = 1000
for first = 1, n, chunk do
  redis.call('RPUSH', KEYS[1], unpack(tasks, first, math.min(first + chunk - 1, n)))
end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('SREM', KEYS[4], ARGV[1])
return n
