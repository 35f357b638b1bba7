-- expire_member.lua: remove a dedup set member that has outlived the set's set_ttl and
-- whose task is neither queued nor taken: a worker died before its ZREM, and the
-- member would otherwise keep that task from ever being made again.
--
-- KEYS[1]   the dedup set
-- KEYS[2]   its todo queue
-- KEYS[3]   the set of the queue's worker ids (<queue>/workers)
-- KEYS[4..] the taken list of each of those workers, in the order of ARGV[3..]
-- ARGV[1]   the member (the task)
-- ARGV[2]   the highest score that counts as expired (now - set_ttl, unix seconds)
-- ARGV[3..] the worker ids whose taken lists are KEYS[4..]
-- Returns   1 when removed; 0 when kept (refreshed meanwhile, gone already, queued or
--           taken); -1 when KEYS[3] holds a worker id not passed (a worker joined since
--           the caller read it: nothing done, read again).
--           An error reply, before any write, when a key holds the wrong type.
-- Touches   KEYS[1] (ZREM); reads the others.

local set, queue, workers, member = KEYS[1], KEYS[2], KEYS[3], ARGV[1]

local expected = {{set, 'zset'}, {queue, 'list'}, {workers, 'set'}}
for i = 4, #KEYS do
  expected[#expected + 1] = {KEYS[i], 'list'}
end
for _, check in ipairs(expected) do
  local actual = redis.call('TYPE', check[1]).ok
  if actual ~= check[2] and actual ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. check[1] .. ' holds a ' .. actual .. ', not a ' .. check[2])
  end
end

local score = redis.call('ZSCORE', set, member)
if not score or tonumber(score) > tonumber(ARGV[2]) then
  return 0
end
local passed = {}
for i = 3, #ARGV do
  passed[ARGV[i]] = true
end
for _, id in ipairs(redis.call('SMEMBERS', workers)) do
  if not passed[id] then
    return -1
  end
end
if redis.call('LPOS', queue, member) then
  return 0
end
for i = 4, #KEYS do
  if redis.call('LPOS', KEYS[i], member) then
    return 0
  end
end
redis.call('ZREM', set, member)
return 1
