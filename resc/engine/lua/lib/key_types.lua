-- key_types.lua: a library put in front of the scripts that check their keys' types
-- before their first write (heartbeat.lua, recover.lua, replay.lua, outbox_done.lua); it
-- only reads TYPE.
--
-- wrong_type(wanted): nil when each KEYS[i] holds the type wanted[i] or does not exist;
-- else an error reply to return at once: "WRONGTYPE <key> holds a <type>, where resc
-- keeps a <wanted>".

local function wrong_type(wanted)
  for index, kind in ipairs(wanted) do
    local actual = redis.call('TYPE', KEYS[index]).ok
    if actual ~= kind and actual ~= 'none' then
      return redis.error_reply('WRONGTYPE ' .. KEYS[index] .. ' holds a ' .. actual
        .. ', where resc keeps a ' .. kind)
    end
  end
  return nil
end
