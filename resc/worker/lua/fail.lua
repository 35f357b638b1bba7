-- fail.lua: a task failed for good: move it from the worker's taken list to the
-- failed list and record why, in one atomic step.
--
-- KEYS[1]  the worker's taken list
-- KEYS[2]  the failed list
-- KEYS[3]  the failed reasons hash (task -> JSON array of records, resc.core.failures)
-- KEYS[4]  the dedup set, when ARGV[3] is '1'
-- ARGV[1]  the task
-- ARGV[2]  the reason
-- ARGV[3]  '1': ZREM the task from the dedup set, so that a later event can make it
--          again (zrem after: the entry is still there); '0': leave the set alone (no
--          set, or zrem before: the entry was removed at the take, and one there now is
--          a copy queued again meanwhile)
-- ARGV[4]  when it failed, unix seconds as a string
-- ARGV[5]  how many times it was tried
-- Returns  1 when moved; 0 when the task was no longer in the taken list: nothing done.
--          An error reply, before any write, when a key holds the wrong type.
-- Touches  KEYS[1] (LREM), KEYS[2] (LPUSH), KEYS[3] (HSET), KEYS[4] (ZREM).

local taken, failed, reasons = KEYS[1], KEYS[2], KEYS[3]
local task, reason = ARGV[1], ARGV[2]
local set = ARGV[3] == '1' and KEYS[4] or nil

for _, check in ipairs({{taken, 'list'}, {failed, 'list'}, {reasons, 'hash'}, {set, 'zset'}}) do
  if check[1] then
    local actual = redis.call('TYPE', check[1]).ok
    if actual ~= check[2] and actual ~= 'none' then
      return redis.error_reply('WRONGTYPE ' .. check[1] .. ' holds a ' .. actual .. ', not a ' .. check[2])
    end
  end
end

if redis.call('LREM', taken, 1, task) == 0 then
  return 0
end
redis.call('LPUSH', failed, task)
-- One record per copy in the failed list, oldest first; a plain string (as written
-- before records) is one copy with that reason.
local records = {}
local old = redis.call('HGET', reasons, task)
if old then
  local ok, decoded = pcall(cjson.decode, old)
  if ok and type(decoded) == 'table' and string.sub(old, 1, 1) == '[' then
    records = decoded
  else
    records = {{reason = old}}
  end
end
records[#records + 1] = {reason = reason, time = ARGV[4], attempts = tonumber(ARGV[5])}
redis.call('HSET', reasons, task, cjson.encode(records))
if set then
  redis.call('ZREM', set, task)
end
return 1
