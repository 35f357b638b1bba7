-- failure_records.lua: a library put in front of the scripts that read or record why an
-- event failed (commit.lua, recover.lua, outbox_done.lua, replay.lua); it touches only
-- the key it is given. Its type is the calling script's to check.
--
-- failure_records(reasons, event): the JSON array of records (reason, time, attempts:
-- one per failed copy, see resc/core/failures.py) that the hash `reasons` keeps for
-- `event`, decoded; nil when there is none or the value is not such an array (an older
-- resc's plain reason). Also returns the value as it is.
--
-- add_failure_record(reasons, event, record): append `record` to those records; a plain
-- reason counts as one older record. HSETs `reasons`.

local function failure_records(reasons, event)
  local value = redis.call('HGET', reasons, event)
  if value and string.sub(value, 1, 1) == '[' then
    local ok, decoded = pcall(cjson.decode, value)
    if ok and type(decoded) == 'table' then
      return decoded, value
    end
  end
  return nil, value
end

local function add_failure_record(reasons, event, record)
  local records, value = failure_records(reasons, event)
  if records == nil then
    records = value and {{reason = value}} or {}
  end
  records[#records + 1] = record
  redis.call('HSET', reasons, event, cjson.encode(records))
end
