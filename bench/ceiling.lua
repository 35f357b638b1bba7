-- ceiling.lua: what Redis alone can do for the benchmark's events, with no resc: for a
-- batch, the same writes resc makes per event (take into the taken queue, ZADD NX to
-- the set, LPUSH the task, LREM from the taken queue), in one call.
--
-- KEYS[1]  input queue
-- KEYS[2]  taken queue
-- ARGV[1]  most events to take
-- ARGV[2]  score for set members
-- ARGV[3]  1 to also PUBLISH the listener channel's two messages per event, else 0
-- Returns  the number of events handled.
-- Touches  KEYS[1], KEYS[2], trt/<plant>/todo-queue, trt/<plant>/todo-set (built here,
--          which resc never does: this script only serves as a yardstick on one server).

local events = redis.call('LRANGE', KEYS[1], -tonumber(ARGV[1]), -1)
local n = #events
if n == 0 then return 0 end
redis.call('LTRIM', KEYS[1], 0, -n - 1)
for i = n, 1, -1 do
  redis.call('LPUSH', KEYS[2], events[i])
end
local publish = ARGV[3] == '1'
for i = n, 1, -1 do
  local event = events[i]
  local plant, product = string.match(event, '^acq/([^/]+)/([^/]+)$')
  local task = 'trt/' .. plant .. '/' .. product
  if redis.call('ZADD', 'trt/' .. plant .. '/todo-set', 'NX', ARGV[2], task) == 1 then
    redis.call('LPUSH', 'trt/' .. plant .. '/todo-queue', task)
    if publish then
      redis.call('PUBLISH', 'events', KEYS[2] .. ' TRIGGER ' .. event .. ' -> ' .. task)
    end
  end
  redis.call('LREM', KEYS[2], -1, event)
  if publish then
    redis.call('PUBLISH', 'events', KEYS[2] .. ' DONE ' .. event)
  end
end
return n
