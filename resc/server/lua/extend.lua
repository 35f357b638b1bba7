-- extend.lua: move a claim's deadline to now + a timeout.
--
-- KEYS[1]  the claims hash (claim.lua)
-- KEYS[2]  the deadlines sorted set
-- ARGV[1]  the claim id
-- ARGV[2]  now, unix milliseconds
-- ARGV[3]  the new timeout, milliseconds
-- ARGV[4]  'extend': only a claim held now; 'later': also mark it to be put back at the
--          new deadline (a retry with a delay)
-- Returns  the new deadline; 0 when there is no such claim; -1 when its deadline has
--          passed or it is marked to be put back: nothing done in both cases. An error
--          reply, before any write, when a key holds the wrong type.
-- Touches  KEYS[1] (HSET, for 'later'), KEYS[2] (ZADD XX).

local claims, deadlines = KEYS[1], KEYS[2]
local id, now = ARGV[1], tonumber(ARGV[2])

for _, check in ipairs({{claims, 'hash'}, {deadlines, 'zset'}}) do
  local actual = redis.call('TYPE', check[1]).ok
  if actual ~= check[2] and actual ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. check[1] .. ' holds a ' .. actual .. ', not a ' .. check[2])
  end
end

local claim = redis.call('HGET', claims, id)
if not claim then
  return 0
end
local first = string.find(claim, ':')
local deadline = tonumber(redis.call('ZSCORE', deadlines, id))
if string.sub(claim, first + 1, first + 1) == 'r' or (deadline and deadline <= now) then
  return -1
end
local new_deadline = now + tonumber(ARGV[3])
if ARGV[4] == 'later' then
  redis.call('HSET', claims, id, string.sub(claim, 1, first) .. 'r' .. string.sub(claim, first + 2))
end
redis.call('ZADD', deadlines, new_deadline, id)
return new_deadline
