-- take.lua: move up to ARGV[1] events from the input queue to the instance's taken
-- list, and mark them as taken ahead: the events already in the taken list are the ones
-- being processed.
--
-- KEYS[1]  input queue (producers LPUSH, so its oldest event is on the right)
-- KEYS[2]  taken list
-- KEYS[3]  taken-ahead count (string: how many events on the taken list's left end
--          were taken ahead, not processed yet; see recover.lua)
-- KEYS[4]  optional: the instance's heartbeat (string with a time to live)
-- ARGV[1]  most events to move (> 0)
-- ARGV[2]  optional: "now" when the events moved are processed at once, not taken
--          ahead: the taken-ahead count is cleared instead (every event of the taken
--          list is being processed)
-- Returns  the moved events, oldest first; false, with nothing moved, when KEYS[4] is
--          given and does not exist (the heartbeat was lost: another instance may have
--          put the list back, and nobody would recover what is taken into it now); an
--          error reply, before any write, when a key holds the wrong type.
-- Touches  KEYS[1] (LTRIM), KEYS[2] (LPUSH), KEYS[3] (SET, DEL).
--
-- Same effect as ARGV[1] RPOPLPUSH calls in a row: the taken list keeps the input
-- queue's order, so that recover.lua can put events back exactly as they were.

local wanted_types = {'list', 'list', 'string', 'string'}
for index = 1, #KEYS do
  local wanted = wanted_types[index]
  local actual = redis.call('TYPE', KEYS[index]).ok
  if actual ~= wanted and actual ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. KEYS[index] .. ' holds a ' .. actual
      .. ', where resc keeps a ' .. wanted)
  end
end
if KEYS[4] and redis.call('EXISTS', KEYS[4]) == 0 then
  return false
end

local newest_first = redis.call('LRANGE', KEYS[1], -tonumber(ARGV[1]), -1)
local n = #newest_first
if n == 0 then
  redis.call('DEL', KEYS[3])
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
if ARGV[2] == 'now' then
  redis.call('DEL', KEYS[3])
else
  redis.call('SET', KEYS[3], n)
end
return oldest_first
