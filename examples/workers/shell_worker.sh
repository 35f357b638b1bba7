#!/usr/bin/env bash
# A worker in shell with redis-cli only, following the take / do / notify protocol.
#
#     examples/workers/shell_worker.sh REDIS_URL PROCESS_ID
#
# It works on the tasks that configs/example.hjson makes for one process id: takes each
# from trt/<id>/todo-queue, removes it from the dedup set, "does" it, then notifies
# global/events that it is done. One task per line: tasks must not hold a newline.
# Stop it with SIGTERM or Ctrl-C. A task whose notice could not be sent (Redis down,
# Ctrl-C in the middle) stays in the taken list and goes back to the queue at the next
# start.
set -uo pipefail

url=$1
process_id=$2
queue="trt/$process_id/todo-queue"
taken="trt/$process_id/taken"
todo_set="trt/$process_id/todo-set"

cli() { redis-cli -u "$url" --raw "$@"; }

stopping=
trap 'stopping=1' INT TERM

# Tasks left in the taken list by a previous run of this worker go back to the queue.
while [ -n "$(cli LMOVE "$taken" "$queue" LEFT RIGHT)" ]; do :; done

while [ -z "$stopping" ]; do
  # 1. Take atomically: the task is always in the queue or in the taken list. Waiting
  #    1 s at most lets the loop see a stop request.
  task=$(cli BLMOVE "$queue" "$taken" RIGHT LEFT 1) || { sleep 1; continue; }
  [ -n "$task" ] || continue
  # 2. Deduplicated queue: allow the task to be queued again while it runs.
  cli ZREM "$todo_set" "$task" >/dev/null
  # 3. Do the work.
  echo "working on $task"
  # 4. Notify: the finished task is itself an event, and rules may react to it.
  # 5. Remove it from the taken list. A Lua script runs atomically, as MULTI/EXEC
  #    would, and takes the task as an argument, so it needs no quoting.
  cli EVAL "redis.call('LPUSH', KEYS[1], ARGV[1]) redis.call('LREM', KEYS[2], 1, ARGV[1])" \
    2 global/events "$taken" "$task" >/dev/null
done
