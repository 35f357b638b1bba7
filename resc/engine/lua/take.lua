-- take.lua: move up to ARGV[1] events from the input queue to the taken queue.
--
-- KEYS[1]  input queue (producers LPUSH, so its oldest event is on the right)
-- KEYS[2]  taken queue
-- ARGV[1]  most events to move (> 0)
-- Returns  the moved events, oldest first.
-- Touches  KEYS[1] (LTRIM), KEYS[2] (LPUSH).
--
-- Same effect as ARGV[1] RPOPLPUSH calls in a row: the taken queue keeps the input
-- queue's order, so that recover.lua can put events back exactly as they were.

local newest_first = redis.call('LRANGE', KEYS[1], -tonumber(ARGV[1]), -1)
local n = #newest_first
if n == 0 then
  return newest_first
end
redis.call('LTRIM', KEYS[1], 0, -n - 1)

local oldest_first = {}
for i = n, 1, -1 do
  oldest_first[#oldest_first + 1] = newest_first[i]
end
-- unpack() is bounded by Lua's C stack: push in chunks.
local chunk = 1000
for first = 1, n, chunk do
  redis.call('LPUSH', KEYS[2], unpack(oldest_first, first, math.min(first + chunk - 1, n)))
end
return oldest_first
