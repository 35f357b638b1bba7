-- join.lua: a worker starts: claim its id with a heartbeat and register it, after
-- putting back into the queue what a previous run under the same id left taken.
--
-- KEYS[1]  the queue
-- KEYS[2]  the worker's taken list
-- KEYS[3]  the worker's heartbeat key
-- KEYS[4]  the set of the queue's worker ids
-- KEYS[5]  the dedup set, when ARGV[4] is '1'
-- ARGV[1]  the worker's id
-- ARGV[2]  the heartbeat's time to live, in milliseconds
-- ARGV[3]  the heartbeat's value (who holds the id: host and process)
-- ARGV[4]  '1': the queue has a dedup set (KEYS[5]); '0': none
-- ARGV[5]  the score of set entries added back: the current unix time
-- Returns  the number of tasks taken out of the taken list, or -1 when the id's
--          heartbeat is alive: another worker runs under this id (nothing done). An
--          error reply, before any write, when a key holds the wrong type.
-- Touches  KEYS[1] (RPUSH), KEYS[2] (DEL), KEYS[3] (SET), KEYS[4] (SADD),
--          KEYS[5] (ZADD NX).
--
-- With a set, each task's entry is added back and the task pushed unless the queue
-- holds it already, as release.lua does.

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
local set = ARGV[4] == '1' and KEYS[5] or nil

for _, check in ipairs({{queue, 'list'}, {taken, 'list'}, {heartbeat, 'string'},
                        {workers, 'set'}, {set, 'zset'}}) do
  if check[1] then
    local actual = redis.call('TYPE', check[1]).ok
    if actual ~= check[2] and actual ~= 'none' then
      return redis.error_reply('WRONGTYPE ' .. check[1] .. ' holds a ' .. actual .. ', not a ' .. check[2])
    end
  end
end

if redis.call('EXISTS', heartbeat) == 1 then
  return -1
end
local tasks = redis.call('LRANGE', taken, 0, -1)
local n = #tasks
if set then
  for _, task in ipairs(tasks) do
    local added = redis.call('ZADD', set, 'NX', ARGV[5], task)
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
redis.call('DEL', taken)
redis.call('SET', heartbeat, ARGV[3], 'PX', ARGV[2])
redis.call('SADD', workers, ARGV[1])
return n
