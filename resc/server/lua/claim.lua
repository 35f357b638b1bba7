-- claim.lua: hand out the next task of a queue as a promise, in one atomic step: the
-- task leaves the queue and becomes a claim with a deadline.
--
-- KEYS[1]  the queue (a list; tasks are taken from its right end, as workers do)
-- KEYS[2]  the claims hash: claim id -> "<attempt>:<mark>:<task>" (mark c: claimed,
--          r: to be put back at its deadline by a retry with a delay)
-- KEYS[3]  the deadlines sorted set: claim id -> deadline, unix milliseconds
-- KEYS[4]  the attempts hash: task -> times claimed, until done or failed
-- KEYS[5]  the dedup set, when ARGV[4] is '1'
-- ARGV[1]  the new claim's id
-- ARGV[2]  now, unix milliseconds
-- ARGV[3]  the claim's timeout, milliseconds
-- ARGV[4]  '1': ZREM the task from the dedup set (zrem before); '0': leave it
-- Returns  {task, deadline, attempt}, or nil when the queue is empty. An error reply,
--          before any write, when a key holds the wrong type.
-- Touches  KEYS[1] (RPOP), KEYS[2] (HSET), KEYS[3] (ZADD), KEYS[4] (HINCRBY), KEYS[5] (ZREM).

local queue, claims, deadlines, attempts = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local set = ARGV[4] == '1' and KEYS[5] or nil

-- Redis does not undo the writes of a script that fails halfway: check types first.
for _, check in ipairs({{queue, 'list'}, {claims, 'hash'}, {deadlines, 'zset'},
                        {attempts, 'hash'}, {set, 'zset'}}) do
  if check[1] then
    local actual = redis.call('TYPE', check[1]).ok
    if actual ~= check[2] and actual ~= 'none' then
      return redis.error_reply('WRONGTYPE ' .. check[1] .. ' holds a ' .. actual .. ', not a ' .. check[2])
    end
  end
end

local task = redis.call('RPOP', queue)
if not task then
  return nil
end
local attempt = redis.call('HINCRBY', attempts, task, 1)
local deadline = tonumber(ARGV[2]) + tonumber(ARGV[3])
redis.call('HSET', claims, ARGV[1], attempt .. ':c:' .. task)
redis.call('ZADD', deadlines, deadline, ARGV[1])
if set then
  redis.call('ZREM', set, task)
end
return {task, deadline, attempt}
