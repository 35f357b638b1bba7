-- requeue.lua: put tasks back into their queue, each exactly once: the claims whose
-- deadline has passed (the reaper), or one claim given back now (a retry).
--
-- KEYS[1]  the queue
-- KEYS[2]  the claims hash (claim.lua)
-- KEYS[3]  the deadlines sorted set
-- KEYS[4]  the dedup set, when ARGV[4] is '1'
-- ARGV[1]  now, unix milliseconds
-- ARGV[2]  'due': every claim due by now, at most ARGV[3] of them; 'one': the claim
--          whose id is ARGV[3], if held now
-- ARGV[3]  see ARGV[2]
-- ARGV[4]  '1': the queue has a dedup set (KEYS[4]); '0': none
-- ARGV[5]  the score of a set entry added back: now, unix seconds
-- Returns  {expired, retried}: how many claims were put back that were past their
--          deadline and how many were retries; {-1, 0} for 'one' on a claim past its
--          deadline or marked to be put back later; {0, 0} for no such claim. An error
--          reply, before any write, when a key holds the wrong type.
-- Touches  KEYS[1] (RPUSH), KEYS[2] (HDEL), KEYS[3] (ZREM), KEYS[4] (ZADD NX).
--
-- As resc/worker/lua/release.lua: the task goes to the right end of the queue, taken
-- next. With a set, the entry is added back (ZADD NX), and the task is pushed unless
-- the queue holds it already (a copy queued again meanwhile): a second copy would be
-- done twice. The attempts hash is kept: the next claim counts one more.

local queue, claims, deadlines = KEYS[1], KEYS[2], KEYS[3]
local now = tonumber(ARGV[1])
local set = ARGV[4] == '1' and KEYS[4] or nil

for _, check in ipairs({{queue, 'list'}, {claims, 'hash'}, {deadlines, 'zset'}, {set, 'zset'}}) do
  if check[1] then
    local actual = redis.call('TYPE', check[1]).ok
    if actual ~= check[2] and actual ~= 'none' then
      return redis.error_reply('WRONGTYPE ' .. check[1] .. ' holds a ' .. actual .. ', not a ' .. check[2])
    end
  end
end

-- Whether the queue holds the task. LPOS came with Redis 6.0.6: before it, look
-- through the queue.
local function queued(task)
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

-- Returns 'r' for a retry, 'c' for a claim that was held.
local function put_back(id)
  local claim = redis.call('HGET', claims, id)
  redis.call('HDEL', claims, id)
  redis.call('ZREM', deadlines, id)
  if not claim then
    return nil
  end
  local first = string.find(claim, ':')
  local task = string.sub(claim, first + 3)
  if not (set and redis.call('ZADD', set, 'NX', ARGV[5], task) == 0 and queued(task)) then
    redis.call('RPUSH', queue, task)
  end
  return string.sub(claim, first + 1, first + 1)
end

if ARGV[2] == 'one' then
  local id = ARGV[3]
  local claim = redis.call('HGET', claims, id)
  if not claim then
    return {0, 0}
  end
  local first = string.find(claim, ':')
  local deadline = tonumber(redis.call('ZSCORE', deadlines, id))
  if string.sub(claim, first + 1, first + 1) == 'r' or (deadline and deadline <= now) then
    return {-1, 0}
  end
  put_back(id)
  return {0, 1}
end

local expired, retried = 0, 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', deadlines, '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))) do
  local mark = put_back(id)
  if mark == 'r' then
    retried = retried + 1
  elseif mark then
    expired = expired + 1
  end
end
return {expired, retried}
