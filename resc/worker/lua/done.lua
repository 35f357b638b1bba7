-- done.lua: a worker finished a task: notify that it is done and forget it, in
-- one atomic step, so that no crash can notify twice or lose the notice.
--
-- KEYS[1]   the worker's taken list
-- KEYS[2..] the done queue when ARGV[2] is '1', then the dedup set when ARGV[3] is '1'
-- ARGV[1]   the task
-- ARGV[2]   '1': LPUSH the task into the done queue (the notice), '0': no notice
-- ARGV[3]   '1': ZREM the task from the dedup set (the worker removes it after the
--           work), '0': leave the set alone
-- Returns   1 when done; 0 when the task was no longer in the taken list: nothing done.
--           An error reply, before any write, when a key holds the wrong type.
-- Touches   KEYS[1] (LREM), the done queue (LPUSH), the dedup set (ZREM).
--
-- A task missing from the taken list was put back into its queue by a reaper (this
-- worker's heartbeat had expired) or by a peer in compatible mode: another worker does
-- it again and notifies then, so notifying now would make two notices.

local taken, task = KEYS[1], ARGV[1]
local done_queue, set
local i = 2
if ARGV[2] == '1' then
  done_queue = KEYS[i]
  i = i + 1
end
if ARGV[3] == '1' then
  set = KEYS[i]
end

-- Redis does not undo the writes of a script that fails halfway: check types first.
for _, check in ipairs({{taken, 'list'}, {done_queue, 'list'}, {set, 'zset'}}) do
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
if done_queue then
  redis.call('LPUSH', done_queue, task)
end
if set then
  redis.call('ZREM', set, task)
end
return 1
