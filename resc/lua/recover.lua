-- recover.lua: put every event of the taken queue back into the input queue, to be
-- taken again first and in their original order.
--
-- KEYS[1]  input queue
-- KEYS[2]  taken queue
-- Returns  the number of events moved.
-- Touches  KEYS[1] (RPUSH), KEYS[2] (DEL).
--
-- The taken queue holds the oldest event on its right, like the input queue: the
-- newest taken event goes back next to the input's right end and the oldest ends up
-- on the very right, where it is taken first.

local events = redis.call('LRANGE', KEYS[2], 0, -1)
local n = #events
local chunk = 1000
for first = 1, n, chunk do
  redis.call('RPUSH', KEYS[1], unpack(events, first, math.min(first + chunk - 1, n)))
end
redis.call('DEL', KEYS[2])
return n
