-- heartbeat.lua: an instance of a watcher joins (registers, with a heartbeat), or
-- refreshes its heartbeat (see resc/engine/instances.py).
--
-- KEYS[1]  the instance's heartbeat (string with a time to live)
-- KEYS[2]  the set of the watcher's instance ids
-- KEYS[3]  the instance's taken list (only its type is checked)
-- ARGV[1]  the instance's id
-- ARGV[2]  the heartbeat's time to live, in milliseconds
-- ARGV[3]  the heartbeat's value: JSON with the host, pid, time to live and a token of
--          the process, which tells it from another process under the same id
-- ARGV[4]  'join': start (the heartbeat may be missing); 'beat': a refresh
-- ARGV[5]  with 'join': a value of KEYS[1] known to be a dead holder's (its process is
--          gone from this machine), which is taken over; '' for none
-- Returns  0 when done; 1 when refreshing a heartbeat that has expired (nothing is
--          refreshed: the instance lost its taken list, or may lose it at any time, to
--          another; its id is registered again, so that the list is recovered even if
--          this instance dies now); {value, remaining ms} when another process holds the
--          heartbeat (nothing done). An error reply, before any write, when a key holds
--          the wrong type.
-- Touches  KEYS[1] (SET PX), KEYS[2] (SADD).

-- wrong_type comes from lib/key_types.lua, put in front.

local wrong = wrong_type({'string', 'set', 'list'})
if wrong then
  return wrong
end

local value = redis.call('GET', KEYS[1])
if value and value ~= ARGV[3] and not (ARGV[4] == 'join' and value == ARGV[5]) then
  return {value, redis.call('PTTL', KEYS[1])}
end
redis.call('SADD', KEYS[2], ARGV[1])
if not value and ARGV[4] ~= 'join' then
  return 1
end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2])
return 0
