-- recover.lua: put every event of a taken list back into the input queue, to be taken
-- again first and in their original order; count the interruption against each event
-- that was being processed and give up on those interrupted too often.
--
-- KEYS[1]  input queue
-- KEYS[2]  taken list (an instance's `<taken_queue>/<id>`, or an older resc's plain
--          `<taken_queue>`)
-- KEYS[3]  attempts hash (event -> interruptions so far; one per watcher)
-- KEYS[4]  failed queue
-- KEYS[5]  failed reasons hash (event -> JSON array of records, see resc/core/failures.py)
-- KEYS[6]  taken-ahead count of the taken list (string, written by take.lua)
-- KEYS[7]  the list holder's liveness key: its heartbeat (an older resc: its owner key)
-- KEYS[8]  the set of the watcher's instance ids
-- KEYS[9]  the holder's outbox (hash: batch id -> results for other slots, commit.lua)
-- KEYS[10] the watcher's outbox of entries whose writer is gone (same form)
-- ARGV[1]  most interruptions of one event (max_attempts); 0 when the events were only
--          taken ahead, never processed, so that nothing is counted
-- ARGV[2]  '' to leave the holder registered; or its id: the holder is gone for good,
--          KEYS[7] is deleted, ARGV[2] removed from KEYS[8], and the entries of KEYS[9]
--          moved into KEYS[10], for any instance to apply (resc/engine/outbox.py)
-- ARGV[3]  '1': another instance's list: nothing is done while KEYS[7] exists (the
--          holder is alive); '0': the caller's own list, moved whatever KEYS[7] holds
-- ARGV[4]  with '1': a value of KEYS[7] known to be a dead holder's (its process is
--          gone from this machine), which counts as expired; '' for none
-- Returns  {events put back, events moved to the failed queue, events put back that
--          were being processed (interrupted), outbox entries moved}, or {-1, 0, 0, 0}
--          when the holder is alive (nothing done); an error reply, before any write, when a key holds the wrong
--          type.
-- Touches  KEYS[1] (RPUSH), KEYS[2] (DEL), KEYS[3] (HINCRBY, HDEL), KEYS[4] (LPUSH),
--          KEYS[5] (HSET), KEYS[6] (DEL), KEYS[7] (DEL), KEYS[8] (SREM), KEYS[9] (DEL),
--          KEYS[10] (HSET).
--
-- The taken list holds the oldest event on its right, like the input queue: the
-- newest taken event goes back next to the input's right end and the oldest ends up
-- on the very right, where it is taken first.
--
-- Only the events being processed were interrupted: the KEYS[6] newest ones (on the
-- left) were taken ahead and never looked at, so they are not counted. Identical
-- events share a count: a text is counted once per recovery, however many copies of
-- it were in hand.
--
-- The liveness key is checked here, not by the caller: an instance whose heartbeat came
-- back meanwhile is left alone, and two instances recovering the same dead one move its
-- events once (the second finds its list empty).

local wrong = wrong_type({'list', 'list', 'hash', 'list', 'hash', 'string', 'string', 'set',
                          'hash', 'hash'})
if wrong then
  return wrong
end

if ARGV[3] == '1' and redis.call('EXISTS', KEYS[7]) == 1 then
  if ARGV[4] == '' or redis.call('GET', KEYS[7]) ~= ARGV[4] then
    return {-1, 0, 0, 0}
  end
end

local max_attempts = tonumber(ARGV[1])
local events = redis.call('LRANGE', KEYS[2], 0, -1) -- newest first
local ahead = math.min(tonumber(redis.call('GET', KEYS[6])) or 0, #events)
local attempts = {} -- text -> interruptions, for the texts being processed
if max_attempts > 0 then
  for j = ahead + 1, #events do
    local event = events[j]
    if attempts[event] == nil then
      attempts[event] = redis.call('HINCRBY', KEYS[3], event, 1)
    end
  end
end

-- One record per failed copy, as commit.lua writes them. wrong_type and
-- add_failure_record come from lib/key_types.lua and lib/failure_records.lua, which are
-- put in front.
local time = redis.call('TIME')
local now = time[1] .. '.' .. string.format('%06d', tonumber(time[2]))
local function given_up(j)
  local tries = j > ahead and attempts[events[j]]
  return tries and tries >= max_attempts
end

-- Oldest first, so that the failed queue keeps their order.
local failed = 0
for j = #events, 1, -1 do
  if given_up(j) then
    local tries = attempts[events[j]]
    redis.call('LPUSH', KEYS[4], events[j])
    add_failure_record(KEYS[5], events[j], {
      reason = 'interrupted ' .. tries .. ' times (resc stopped or lost Redis while '
        .. 'processing it): given up after max_attempts',
      time = now, attempts = tries})
    failed = failed + 1
  end
end
for event, tries in pairs(attempts) do
  if tries >= max_attempts then
    redis.call('HDEL', KEYS[3], event)
  end
end

local back = {}
local interrupted = 0
for j = 1, #events do
  if not given_up(j) then
    back[#back + 1] = events[j]
    if j > ahead and attempts[events[j]] then
      interrupted = interrupted + 1
    end
  end
end
local chunk = 1000
for first = 1, #back, chunk do
  redis.call('RPUSH', KEYS[1], unpack(back, first, math.min(first + chunk - 1, #back)))
end
redis.call('DEL', KEYS[2], KEYS[6])
local entries = 0
if ARGV[2] ~= '' then
  redis.call('DEL', KEYS[7])
  redis.call('SREM', KEYS[8], ARGV[2])
  if KEYS[9] ~= KEYS[10] then
    local fields = redis.call('HGETALL', KEYS[9])
    for j = 1, #fields, 2 do
      redis.call('HSET', KEYS[10], fields[j], fields[j + 1])
    end
    entries = #fields / 2
    redis.call('DEL', KEYS[9])
  end
end
return {#back, failed, interrupted, entries}
