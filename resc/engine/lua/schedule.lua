-- schedule.lua: push the delayed tasks of one todo queue that are due, oldest due first,
-- each exactly once: several resc instances may run this on the same queue.
--
-- KEYS[1]  the queue's delayed tasks: sorted set of "<n>:<task>" by due time (commit.lua)
-- KEYS[2]  the todo queue
-- KEYS[3]  the watcher's set of todo queues with delayed tasks
-- KEYS[4]  the counter of the queue's delayed tasks (commit.lua)
-- ARGV[1]  now, unix milliseconds
-- ARGV[2]  the most tasks to push in this call
-- ARGV[3]  the queue's name as KEYS[3] lists it
-- Returns  {pushed, next}: how many tasks were pushed, and the due time of the next
--          delayed task (unix milliseconds), or -1 when none is left (the queue is then
--          dropped from KEYS[3], and the counter deleted). An error reply, before any write, when a key holds the
--          wrong type.
-- Touches  KEYS[1] (ZREMRANGEBYRANK), KEYS[2] (LPUSH), KEYS[3] (SREM), KEYS[4] (DEL).
--
-- A task goes to the left end of its queue, as commit.lua pushes: workers take from the
-- right, so tasks are taken in the order they became due. Its dedup set entry was made
-- at the commit and stays: the set still holds the task until a worker is done with it.

local delayed, queue, queues, counter = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

for _, check in ipairs({{delayed, 'zset'}, {queue, 'list'}, {queues, 'set'}, {counter, 'string'}}) do
  local actual = redis.call('TYPE', check[1]).ok
  if actual ~= check[2] and actual ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. check[1] .. ' holds a ' .. actual .. ', not a ' .. check[2])
  end
end

local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local colon = string.find(member, ':', 1, true)
  redis.call('LPUSH', queue, string.sub(member, colon + 1))
end
if #due > 0 then
  -- The members just read are the first ones by rank.
  redis.call('ZREMRANGEBYRANK', delayed, 0, #due - 1)
end
local next_due = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
if #next_due == 0 then
  redis.call('SREM', queues, ARGV[3])
  redis.call('DEL', counter)
  return {#due, -1}
end
return {#due, tonumber(next_due[2])}
