-- apply.lua: on a Redis Cluster, push the results of a committed batch that belong to
-- one slot other than its watcher's, exactly once however often it runs (the outbox:
-- see resc/engine/outbox.py).
--
-- KEYS[1]   the batch's marker in this slot: present once the results were applied
-- KEYS[2..] the todo queues and dedup sets named by the records below (this slot's)
-- ARGV[1]   score of new set members (unix time, whole seconds)
-- ARGV[2]   the marker's time to live, milliseconds
-- ARGV[3]   listener channel, or '' for none
-- ARGV[4]   listener format: 'text' or 'json'
-- ARGV[5]   the watcher's name (its input queue), for json messages
-- ARGV[6]   the watcher's taken queue, as messages name it
-- ARGV[7..] one record per result: event, task, queue key index, set key index (0: no
--           set), the rule's name, the make's name ('' for none)
-- Returns   the status of each result, in order, one letter each: 'p' (pushed), 'd'
--           (already in its set) or '!' (a key holds the wrong type: not pushed), with
--           the reasons of the '!' after a newline, one per line: "<key> holds a <type>".
--           When the marker exists: '=' and what the first run returned; nothing is done
--           again.
-- Touches   KEYS[1] (SET PX), todo queues (LPUSH), dedup sets (ZADD NX); PUBLISHes to
--           the listener channel.
--
-- publish_trigger comes from lib/messages.lua, which is put in front.
--
-- The marker is written with the pushes, in the same atomic step, so that a replay of
-- the outbox entry (after resc was killed between this script and the entry's removal)
-- pushes nothing twice. Its time to live only bounds what a lost entry leaves behind:
-- the writer deletes it once the entry is gone.

local marker = KEYS[1]
local done = redis.call('GET', marker)
if done then
  return '=' .. done
end
local score, ttl, channel = ARGV[1], ARGV[2], ARGV[3]
local json, watcher, named = ARGV[4] == 'json', ARGV[5], ARGV[6]
local now
if channel ~= '' and json then
  local time = redis.call('TIME')
  now = string.format('%s.%06d', time[1], tonumber(time[2]))
end

-- Each key's type, checked before the first write: a record whose key holds another
-- type is not pushed, and its reason returned.
local wrong = {} -- key index -> its type, when wrong
local seen = {}
local function check(index, wanted)
  if index > 0 and not seen[index] then
    seen[index] = true
    local actual = redis.call('TYPE', KEYS[index]).ok
    if actual ~= wanted and actual ~= 'none' then
      wrong[index] = actual
    end
  end
end
local i, nargs = 7, #ARGV
while i <= nargs do
  check(tonumber(ARGV[i + 2]), 'list')
  check(tonumber(ARGV[i + 3]), 'zset')
  i = i + 6
end

local status, reasons = {}, {}
i = 7
while i <= nargs do
  local event, task = ARGV[i], ARGV[i + 1]
  local queue_index, set_index = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local bad = wrong[queue_index] and queue_index or (wrong[set_index] and set_index)
  if bad then
    status[#status + 1] = '!'
    reasons[#reasons + 1] = KEYS[bad] .. ' holds a ' .. wrong[bad]
  elseif set_index == 0 or redis.call('ZADD', KEYS[set_index], 'NX', score, task) == 1 then
    local queue = KEYS[queue_index]
    redis.call('LPUSH', queue, task)
    status[#status + 1] = 'p'
    if channel ~= '' then
      publish_trigger(channel, named, event, task, json and {
        kind = 'trigger', event = event, task = task, queue = queue,
        set = set_index > 0 and KEYS[set_index] or nil, rule = ARGV[i + 4],
        make = ARGV[i + 5] ~= '' and ARGV[i + 5] or nil,
        watcher = watcher, taken_queue = named, time = now} or nil)
    end
  else
    status[#status + 1] = 'd'
  end
  i = i + 6
end
local reply = table.concat(status)
if #reasons > 0 then
  reply = reply .. '\n' .. table.concat(reasons, '\n')
end
redis.call('SET', marker, reply, 'PX', ttl)
return reply
