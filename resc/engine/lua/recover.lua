-- recover.lua: put every event of the taken queue back into the input queue, to be
-- taken again first and in their original order; count the interruption against each
-- event and give up on those interrupted too often.
--
-- KEYS[1]  input queue
-- KEYS[2]  taken queue
-- KEYS[3]  attempts hash (event -> interruptions so far)
-- KEYS[4]  failed queue
-- KEYS[5]  failed reasons hash (event -> reason)
-- ARGV[1]  most interruptions of one event (max_attempts); 0 when the events were only
--          taken ahead, never processed, so that nothing is counted
-- Returns  {events put back, events moved to the failed queue}
-- Touches  KEYS[1] (RPUSH), KEYS[2] (DEL), KEYS[3] (HINCRBY, HDEL), KEYS[4] (LPUSH),
--          KEYS[5] (HSET).
--
-- The taken queue holds the oldest event on its right, like the input queue: the
-- newest taken event goes back next to the input's right end and the oldest ends up
-- on the very right, where it is taken first.

local max_attempts = tonumber(ARGV[1])
local events = redis.call('LRANGE', KEYS[2], 0, -1)
local back = {}
local failed = 0
for _, event in ipairs(events) do
  local attempts = 0
  if max_attempts > 0 then
    attempts = redis.call('HINCRBY', KEYS[3], event, 1)
  end
  if max_attempts > 0 and attempts >= max_attempts then
    redis.call('HDEL', KEYS[3], event)
    redis.call('LPUSH', KEYS[4], event)
    redis.call('HSET', KEYS[5], event, 'interrupted ' .. attempts .. ' times (resc stopped '
      .. 'or lost Redis while processing it): given up after max_attempts')
    failed = failed + 1
  else
    back[#back + 1] = event
  end
end
local chunk = 1000
for first = 1, #back, chunk do
  redis.call('RPUSH', KEYS[1], unpack(back, first, math.min(first + chunk - 1, #back)))
end
redis.call('DEL', KEYS[2])
return {#back, failed}
