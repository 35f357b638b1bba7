-- owner.lua: claim, renew or release the owner key of a taken queue (see
-- resc/engine/owner.py): one resc at a time works on a taken queue.
--
-- KEYS[1]  owner key (string: the id of the resc instance that holds the taken queue)
-- ARGV[1]  this instance's id
-- ARGV[2]  time to live in milliseconds; 0 to release the key
-- ARGV[3]  a holder known to be dead, whose key may be taken over; '' for none
-- Returns  false when done (claimed, renewed or released; a release of a key held by
--          another does nothing); {holder, its remaining time to live in ms} when
--          another instance holds the key; an error reply, before any write, when the
--          key holds the wrong type.
-- Touches  KEYS[1] (SET PX, DEL).

local actual = redis.call('TYPE', KEYS[1]).ok
if actual ~= 'string' and actual ~= 'none' then
  return redis.error_reply('WRONGTYPE ' .. KEYS[1] .. ' holds a ' .. actual
    .. ', where resc keeps a string')
end

local holder = redis.call('GET', KEYS[1])
local ttl_ms = tonumber(ARGV[2])
if ttl_ms == 0 then
  if holder == ARGV[1] then
    redis.call('DEL', KEYS[1])
  end
  return false
end
if not holder or holder == ARGV[1] or (ARGV[3] ~= '' and holder == ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl_ms)
  return false
end
return {holder, redis.call('PTTL', KEYS[1])}
