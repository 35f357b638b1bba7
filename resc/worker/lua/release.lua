-- release.lua: give a task in hand back to its queue, to be taken next.
--
-- KEYS[1]  the worker's taken list
-- KEYS[2]  the queue
-- KEYS[3]  the dedup set, when ARGV[2] is '1'
-- ARGV[1]  the task
-- ARGV[2]  '1': the queue has a dedup set (KEYS[3]); '0': none
-- ARGV[3]  the score of a set entry added back: the current unix time
-- Returns  1 when given back (pushed, or found queued already); 0 when the task was no
--          longer in the taken list: nothing done. An error reply, before any write,
--          when a key holds the wrong type.
-- Touches  KEYS[1] (LREM), KEYS[2] (RPUSH), KEYS[3] (ZADD NX).
--
-- Workers take from the right end of the queue: RPUSH puts the task where it is taken
-- first. With a set, the set must keep saying what is queued: the entry is added back
-- (ZADD NX), and the task is pushed unless the queue holds it already (a copy queued
-- again while this one ran, zrem before): a second copy would be done twice.

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

local taken, queue, task = KEYS[1], KEYS[2], ARGV[1]
local set = ARGV[2] == '1' and KEYS[3] or nil

-- Redis does not undo the writes of a script that fails halfway: check types first.
for _, check in ipairs({{taken, 'list'}, {queue, 'list'}, {set, 'zset'}}) do
  if check[1] then
    local actual = redis.call('TYPE', check[1]).ok
    if actual ~= check[2] and actual ~= 'none' then
      return redis.error_reply('WRONGTYPE ' .. check[1] .. ' holds a ' .. actual .. ', not a ' .. check[2])
    end
  end
end

if redis.call('LREM', taken, 1, task) == 0 then
  return 0
end
if set then
  local added = redis.call('ZADD', set, 'NX', ARGV[3], task)
  if added == 0 and queued(queue, task) then
    return 1
  end
end
redis.call('RPUSH', queue, task)
return 1
