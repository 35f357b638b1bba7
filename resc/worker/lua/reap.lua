-- reap.lua: put the tasks of a worker whose heartbeat has expired back into the
-- queue, and forget that worker.
--
-- KEYS[1]  the queue
-- KEYS[2]  that worker's taken list
-- KEYS[3]  that worker's heartbeat key
-- KEYS[4]  the set of the queue's worker ids
-- KEYS[5]  the dedup set, when ARGV[3] is '1'
-- ARGV[1]  that worker's id
-- ARGV[2]  '1': the worker itself is leaving: reap even though its heartbeat is alive,
--          and delete the heartbeat; '0': only a worker whose heartbeat has expired
-- ARGV[3]  '1': the queue has a dedup set (KEYS[5]); '0': none
-- ARGV[4]  the score of set entries added back: the current unix time
-- Returns  the number of tasks taken out of the taken list, or -1 when the heartbeat is
--          alive (nothing done). An error reply, before any write, when a key holds the
--          wrong type.
-- Touches  KEYS[1] (RPUSH), KEYS[2] (DEL), KEYS[3] (DEL), KEYS[4] (SREM),
--          KEYS[5] (ZADD NX).
--
-- Atomic, so that a worker is reaped once even when several reapers run: the second
-- finds the taken list empty. The heartbeat is checked here, not by the caller, so
-- that a worker whose heartbeat came back meanwhile is left alone. With a set, each
-- task's entry is added back (ZADD NX) and the task pushed unless the queue holds it
-- already, as release.lua does.

-- Whether the queue holds the task. LPOS came with Redis 6.0.6: before it, look
-- through the queue.
local function queued(queue, task)
  local found = redis.pcall('LPOS', queue, task)
  if type(found) ~= 'table' or not found.err then
    return found ~= false
  end
  local n = redis.call('LLEN', queue)
  for first = 0, n - 1, 1000 do
    for _, item in ipairs(redis.call('LRANGE', queue, first, first + 999)) do
      if item == task then
        return true
      end
    end
  end
  return false
end

local queue, taken, heartbeat, workers = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local set = ARGV[3] == '1' and KEYS[5] or nil

for _, check in ipairs({{queue, 'list'}, {taken, 'list'}, {workers, 'set'}, {set, 'zset'}}) do
  if check[1] then
    local actual = redis.call('TYPE', check[1]).ok
    if actual ~= check[2] and actual ~= 'none' then
      return redis.error_reply('WRONGTYPE ' .. check[1] .. ' holds a ' .. actual .. ', not a ' .. check[2])
    end
  end
end

if ARGV[2] ~= '1' and redis.call('EXISTS', heartbeat) == 1 then
  return -1
end
-- The taken list holds the oldest task on its right, as the queue does: pushing from
-- the newest to the oldest puts the oldest on the queue's right end, taken first.
local tasks = redis.call('LRANGE', taken, 0, -1)
local n = #tasks
if set then
  for _, task in ipairs(tasks) do
    local added = redis.call('ZADD', set, 'NX', ARGV[4], task)
    if added == 1 or not queued(queue, task) then
      redis.call('RPUSH', queue, task)
    end
  end
else
  local chunk = 1000
  for first = 1, n, chunk do
    redis.call('RPUSH', queue, unpack(tasks, first, math.min(first + chunk - 1, n)))
  end
end
redis.call('DEL', taken, heartbeat)
redis.call('SREM', workers, ARGV[1])
return n
