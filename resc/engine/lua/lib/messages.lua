-- messages.lua: a library put in front of the scripts that announce a pushed task on the
-- listener channel (commit.lua, apply.lua); it touches no key.
--
-- publish_trigger(channel, named, event, task, message): PUBLISH the trigger of a task
-- to `channel`: `message` encoded when it is given (the json format: a table of kind,
-- event, task, queue, set, rule, make, due, watcher, taken_queue, time), else the
-- original's text, "<named> TRIGGER <event> -> <task>". The callers build `message`
-- only for the json format, so that the text format costs no table per task.

local function publish_trigger(channel, named, event, task, message)
  if message then
    redis.call('PUBLISH', channel, cjson.encode(message))
  else
    redis.call('PUBLISH', channel, named .. ' TRIGGER ' .. event .. ' -> ' .. task)
  end
end
