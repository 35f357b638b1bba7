-- finish.lua: a promise kept or broken for good: forget the claim and either notify that
-- the task is done (LPUSH to the done queue) or move it to the failed list with a record
-- of why (resc.core.failures), in one atomic step, so that nothing is notified twice.
--
-- KEYS[1]  the claims hash (claim.lua)
-- KEYS[2]  the deadlines sorted set
-- KEYS[3]  the attempts hash
-- KEYS[4]  the target list: the done queue or the failed list (when ARGV[4] is '1')
-- KEYS[5]  the failed reasons hash (when ARGV[3] is 'fail')
-- KEYS[6]  the dedup set, when ARGV[5] is '1'
-- ARGV[1]  the claim id
-- ARGV[2]  now, unix milliseconds
-- ARGV[3]  'done' or 'fail'
-- ARGV[4]  '1': push the task to KEYS[4]; '0': no push (done without a done queue)
-- ARGV[5]  '1': ZREM the task from the dedup set (zrem after); '0': leave it
-- ARGV[6]  fail: the reason
-- ARGV[7]  fail: when it failed, unix seconds as a string
-- Returns  1 when finished; 0 when there is no such claim; -1 when its deadline has
--          passed (the reaper puts it back into its queue): nothing done in both cases.
--          An error reply, before any write, when a key holds the wrong type.
-- Touches  KEYS[1] (HDEL), KEYS[2] (ZREM), KEYS[3] (HDEL), KEYS[4] (LPUSH), KEYS[5]
--          (HSET), KEYS[6] (ZREM).

local claims, deadlines, attempts = KEYS[1], KEYS[2], KEYS[3]
local id, now, verb = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local target = ARGV[4] == '1' and KEYS[4] or nil
local reasons = verb == 'fail' and KEYS[5] or nil
local set = ARGV[5] == '1' and KEYS[6] or nil

for _, check in ipairs({{claims, 'hash'}, {deadlines, 'zset'}, {attempts, 'hash'},
                        {target, 'list'}, {reasons, 'hash'}, {set, 'zset'}}) do
  if check[1] then
    local actual = redis.call('TYPE', check[1]).ok
    if actual ~= check[2] and actual ~= 'none' then
      return redis.error_reply('WRONGTYPE ' .. check[1] .. ' holds a ' .. actual .. ', not a ' .. check[2])
    end
  end
end

local claim = redis.call('HGET', claims, id)
if not claim then
  return 0
end
local first = string.find(claim, ':')
local attempt = tonumber(string.sub(claim, 1, first - 1))
local mark = string.sub(claim, first + 1, first + 1)
local task = string.sub(claim, first + 3)
-- Past its deadline, or retried with a delay, the claim is the reaper's: it puts the
-- task back, once.
local deadline = tonumber(redis.call('ZSCORE', deadlines, id))
if mark == 'r' or (deadline and deadline <= now) then
  return -1
end

redis.call('HDEL', claims, id)
redis.call('ZREM', deadlines, id)
redis.call('HDEL', attempts, task)
if target then
  redis.call('LPUSH', target, task)
end
if reasons then
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
  records[#records + 1] = {reason = ARGV[6], time = ARGV[7], attempts = attempt}
  redis.call('HSET', reasons, task, cjson.encode(records))
end
if set then
  redis.call('ZREM', set, task)
end
return 1
