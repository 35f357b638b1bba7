-- failure_records.lua: a library put in front of the scripts that record why an event
-- failed (commit.lua, recover.lua, outbox_done.lua); it touches only the key it is given.
--
-- add_failure_record(reasons, event, record): append `record` (a table: reason, time,
-- attempts) to the JSON array of records that the hash `reasons` keeps for `event`, one
-- per failed copy (see resc/core/failures.py). A value that is not such an array (an
-- older resc's plain reason) counts as one older record. HSETs `reasons`; its type is
-- the calling script's to check.

local function add_failure_record(reasons, event, record)
  local value = redis.call('HGET', reasons, event)
  local records = nil
  if value and string.sub(value, 1, 1) == '[' then
    local ok, decoded = pcall(cjson.decode, value)
    if ok and type(decoded) == 'table' then
      records = decoded
    end
  end
  if records == nil then
    records = value and {{reason = value}} or {}
  end
  records[#records + 1] = record
  redis.call('HSET', reasons, event, cjson.encode(records))
end
