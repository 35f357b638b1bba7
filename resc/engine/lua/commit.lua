-- commit.lua: commit a batch of processed events, all of each event or none of it.
--
-- KEYS[1]   taken list (the instance's, see recover.lua)
-- KEYS[2]   failed queue
-- KEYS[3]   failed reasons hash (event -> JSON array of records, one per failed copy:
--             reason, time, attempts; see resc/core/failures.py)
-- KEYS[4]   attempts hash (event -> interruptions, see recover.lua)
-- KEYS[5]   the watcher's set of todo queues with delayed tasks (schedule.lua)
-- KEYS[6]   the instance's outbox (hash: batch id -> the results of the batch's events
--             for other slots of a Redis Cluster, see resc/engine/outbox.py)
-- KEYS[7..] the todo queues, dedup sets, delayed tasks' sorted sets and their counters
--           named by the records below
-- ARGV[1]   score of new set members (unix time, whole seconds)
-- ARGV[2]   listener channel, or '' for none
-- ARGV[3]   listener format: 'text' (the original's messages) or 'json'
-- ARGV[4]   the watcher's name (its input queue), for json messages
-- ARGV[5]   the watcher's taken queue, as messages name it (not the instance's list)
-- ARGV[6]   the batch id, under which KEYS[6] keeps the results for other slots
-- ARGV[7..] one record per event, in the order they were taken:
--             event, n, then n times: task, queue key index, set key index (0: no
--               set), delayed key index d (0: push now; else KEYS[d] is the queue's
--               sorted set of delayed tasks and KEYS[d + 1] their counter), due time
--               (unix milliseconds, with d > 0), and with the json format the rule's
--               name and the make's name ('' for none); then the event's results for
--               other slots, encoded (resc/engine/outbox.py), or ''
--             event, -1, reason                       (the event failed)
-- Returns   a status string: per event 'c' (committed), 'f' (moved to the failed
--           queue) or 'm' (no longer in the taken queue: nothing done); after a 'c',
--           one letter per result of its slot: 'p' (pushed) or 'd' (already in its
--           set).
--           Or '!<key index>:<type>' when a key holds the wrong type: nothing was done.
-- Touches   KEYS[1] (LREM), KEYS[2] (LPUSH), KEYS[3] (HSET), KEYS[4] (HDEL), KEYS[5]
--           (SADD), KEYS[6] (HSET), todo queues (LPUSH), dedup sets (ZADD NX), delayed tasks (ZADD)
--           and their counters (INCR); PUBLISHes to the listener channel.
--
-- The event is removed from the taken queue first: when it is no longer there (another
-- process put it back into the input queue), it will be processed again, so nothing of
-- it may be pushed now. Redis does not undo the writes of a script that fails halfway,
-- so every key's type is checked before the first write.
--
-- add_failure_record and publish_trigger come from lib/failure_records.lua and
-- lib/messages.lua, which are put in front.
--
-- Identical events share their attempts count and their reasons field: the count goes
-- only with the last copy in the taken list, and each failed copy adds its own record.
-- (A copy in another instance's hands is not seen here: its count starts again.)
--
-- A delayed task enters its dedup set now, scored by its due time, so that the set
-- holds it from the commit until a worker is done with it, and set_ttl counts from
-- when it is due; schedule.lua pushes it into its queue when it is due.
--
-- On a Redis Cluster a script writes one slot only: the results for other slots of the
-- events committed here are kept in the outbox, in the same atomic step, and applied
-- there afterwards by apply.lua (see resc/engine/outbox.py).

local taken, failed, reasons, attempts = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local delayed_queues, outbox = KEYS[5], KEYS[6]
local score, channel = ARGV[1], ARGV[2]
local batch = ARGV[6]
local json, watcher, named = ARGV[3] == 'json', ARGV[4], ARGV[5]
local stride = json and 7 or 5
local now
if channel ~= '' and json then
  -- A string: cjson writes numbers with 14 significant digits, which would keep only
  -- 4 of the 6 decimals.
  local time = redis.call('TIME')
  now = string.format('%s.%06d', time[1], tonumber(time[2]))
end

-- Pass 1: every key must hold its expected type or not exist.
local expected = {[1] = 'list', [2] = 'list', [3] = 'hash', [4] = 'hash', [5] = 'set',
                  [6] = 'hash'}
local i, nargs = 7, #ARGV
while i <= nargs do
  local count = tonumber(ARGV[i + 1])
  i = i + 2
  if count < 0 then
    i = i + 1
  else
    for _ = 1, count do
      expected[tonumber(ARGV[i + 1])] = 'list'
      local set_index = tonumber(ARGV[i + 2])
      if set_index > 0 then
        expected[set_index] = 'zset'
      end
      local delayed_index = tonumber(ARGV[i + 3])
      if delayed_index > 0 then
        expected[delayed_index] = 'zset'
        expected[delayed_index + 1] = 'string'
      end
      i = i + stride
    end
    i = i + 1 -- the results for other slots
  end
end
for index, wanted in pairs(expected) do
  local actual = redis.call('TYPE', KEYS[index]).ok
  if actual ~= wanted and actual ~= 'none' then
    return '!' .. index .. ':' .. actual
  end
end

-- Pass 2: the writes.
-- An event done with, either way, has no interruptions left to count, unless another
-- copy of it is still in hand: copies[event] is how many are in the taken queue.
local counted = redis.call('EXISTS', attempts) == 1
local copies = {}
if counted then
  for _, event in ipairs(redis.call('LRANGE', taken, 0, -1)) do
    copies[event] = (copies[event] or 0) + 1
  end
end
local failed_at
local function add_failure(event, reason, tries)
  if not failed_at then
    local t = redis.call('TIME')
    failed_at = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
  end
  add_failure_record(reasons, event, {reason = reason, time = failed_at, attempts = tries})
end
local status = {}
local elsewhere = {} -- the committed events' results for other slots
i = 7
while i <= nargs do
  local event = ARGV[i]
  local count = tonumber(ARGV[i + 1])
  i = i + 2
  local removed = redis.call('LREM', taken, -1, event) == 1
  local tries = 1
  if removed and counted then
    tries = tries + (tonumber(redis.call('HGET', attempts, event)) or 0)
    copies[event] = copies[event] - 1
    if copies[event] == 0 then
      redis.call('HDEL', attempts, event)
    end
  end
  if not removed then
    status[#status + 1] = 'm'
    i = i + (count < 0 and 1 or stride * count + 1)
  elseif count < 0 then
    redis.call('LPUSH', failed, event)
    add_failure(event, ARGV[i], tries)
    status[#status + 1] = 'f'
    i = i + 1
  else
    status[#status + 1] = 'c'
    for _ = 1, count do
      local task = ARGV[i]
      local set_index = tonumber(ARGV[i + 2])
      local delayed_index = tonumber(ARGV[i + 3])
      local queue = KEYS[tonumber(ARGV[i + 1])]
      local due, task_score = nil, score
      if delayed_index > 0 then
        due = ARGV[i + 4]
        task_score = string.format('%d', math.floor(tonumber(due) / 1000))
      end
      if set_index == 0 or redis.call('ZADD', KEYS[set_index], 'NX', task_score, task) == 1 then
        if due then
          local n = redis.call('INCR', KEYS[delayed_index + 1])
          redis.call('ZADD', KEYS[delayed_index], due, n .. ':' .. task)
          redis.call('SADD', delayed_queues, queue)
        else
          redis.call('LPUSH', queue, task)
        end
        status[#status + 1] = 'p'
        if channel ~= '' then
          publish_trigger(channel, named, event, task, json and {
            kind = 'trigger', event = event, task = task, queue = queue,
            set = set_index > 0 and KEYS[set_index] or nil, rule = ARGV[i + 5],
            make = ARGV[i + 6] ~= '' and ARGV[i + 6] or nil,
            due = due and string.format('%d.%03d', math.floor(tonumber(due) / 1000),
              tonumber(due) % 1000) or nil,
            watcher = watcher, taken_queue = named, time = now} or nil)
        end
      else
        status[#status + 1] = 'd'
      end
      i = i + stride
    end
    if ARGV[i] ~= '' then
      elsewhere[#elsewhere + 1] = ARGV[i]
    end
    i = i + 1
    if channel == '' then
      -- no message
    elseif json then
      redis.call('PUBLISH', channel, cjson.encode({
        kind = 'done', event = event, watcher = watcher, taken_queue = named, time = now}))
    else
      redis.call('PUBLISH', channel, named .. ' DONE ' .. event)
    end
  end
end
if #elsewhere > 0 then
  redis.call('HSET', outbox, batch, table.concat(elsewhere))
end
return table.concat(status)
