-- delete_failed.lua: delete the oldest copy of one failed event or task, with its
-- oldest failed record, in one atomic step.
--
-- KEYS[1]  the failed list
-- KEYS[2]  its reasons hash (text -> JSON array of records, or a plain reason string)
-- ARGV[1]  the text
-- Returns  1 when deleted; 0 when no copy is left in the failed list (nothing done).
--          An error reply, before any write, when a key holds the wrong type.
-- Touches  KEYS[1] (LREM), KEYS[2] (HSET or HDEL).

local failed, reasons, text = KEYS[1], KEYS[2], ARGV[1]

for _, check in ipairs({{failed, 'list'}, {reasons, 'hash'}}) do
  local actual = redis.call('TYPE', check[1]).ok
  if actual ~= check[2] and actual ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. check[1] .. ' holds a ' .. actual .. ', not a ' .. check[2])
  end
end

if redis.call('LREM', failed, -1, text) == 0 then
  return 0
end
local value = redis.call('HGET', reasons, text)
if value then
  local ok, records = pcall(cjson.decode, value)
  if ok and type(records) == 'table' and string.sub(value, 1, 1) == '[' and #records > 1 then
    table.remove(records, 1)
    redis.call('HSET', reasons, text, cjson.encode(records))
  else
    redis.call('HDEL', reasons, text)
  end
end
return 1
