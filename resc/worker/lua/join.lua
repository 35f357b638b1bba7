-- join.lua: a worker starts: claim its id with a heartbeat and register it, after
-- putting back into the queue what a previous run under the same id left taken.
--
-- KEYS[1]  the queue
-- KEYS[2]  the worker's taken list
-- KEYS[3]  the worker's heartbeat key
-- KEYS[4]  the set of the queue's worker ids
-- ARGV[1]  the worker's id
-- ARGV[2]  the heartbeat's time to live, in milliseconds
-- ARGV[3]  the heartbeat's value (who holds the id: host and process)
-- Returns  the number of tasks put back, or -1 when the id's heartbeat is alive: another
--          worker runs under this id (nothing done).
-- Touches  KEYS[1] (RPUSH), KEYS[2] (DEL), KEYS[3] (SET), KEYS[4] (SADD).

if redis.call('EXISTS', KEYS[3]) == 1 then
  return -1
end
local tasks = redis.call('LRANGE', KEYS[2], 0, -1)
local n = #tasks
local chunk = 1000
for first = 1, n, chunk do
  redis.call('RPUSH', KEYS[1], unpack(tasks, first, math.min(first + chunk - 1, n)))
end
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[2])
redis.call('SADD', KEYS[4], ARGV[1])
return n
