#!/usr/bin/env bash
# A worker in shell with redis-cli only, following the take / do / notify protocol.
#
#     examples/workers/shell_worker.sh REDIS_URL PROCESS_ID
#
# It works on the tasks that configs/example.hjson makes for one process id: takes each
# from trt/<id>/todo-queue, removes it from the dedup set, "does" it, then notifies
# global/events that it is done. One task per line: tasks must not hold a newline.
# It waits out Redis restarts and failovers. Stop it with SIGTERM or Ctrl-C.
set -uo pipefail

if [ $# -ne 2 ]; then
  echo "usage: shell_worker.sh REDIS_URL PROCESS_ID" >&2
  exit 2
fi
# redis-cli 7 sends an empty user name for redis://:password@host: name the default one.
url=${1/:\/\/:/://default:}
process_id=$2
queue="trt/$process_id/todo-queue"
taken="trt/$process_id/taken"
todo_set="trt/$process_id/todo-set"

# -e: a refused command exits non-zero instead of printing its error as a reply.
cli() { redis-cli -e --no-auth-warning -u "$url" --raw "$@"; }

stopping=
trap 'stopping=1' INT TERM

# After a failed command (Redis restarting, a failover): wait 0.1 s, then twice as long
# each time, up to 5 s, with jitter so that workers do not all come back at one instant.
delay_ms=100
wait_a_while() {
  local wait_ms=$(( delay_ms / 2 + RANDOM % (delay_ms / 2) ))
  sleep "$(( wait_ms / 1000 )).$(printf %03d $(( wait_ms % 1000 )))"
  delay_ms=$(( delay_ms * 2 > 5000 ? 5000 : delay_ms * 2 ))
}

# The taken list holds what this worker took and did not notify: tasks of an earlier
# run, and after a failed command the task in hand, whose notice may not have been sent.
# Back into the queue with them, to be done again: the notice below removes a task from
# the taken list in the same step, so a task still there was not notified.
put_back() {
  local moved
  while [ -z "$stopping" ]; do
    if moved=$(cli LMOVE "$taken" "$queue" LEFT RIGHT); then
      [ -n "$moved" ] || return 0  # the taken list is empty
    else
      wait_a_while
    fi
  done
}

put_back
while [ -z "$stopping" ]; do
  # 1. Take atomically: the task is always in the queue or in the taken list. Waiting
  #    1 s at most lets the loop see a stop request.
  task=$(cli BLMOVE "$queue" "$taken" RIGHT LEFT 1) || { wait_a_while; put_back; continue; }
  delay_ms=100
  [ -n "$task" ] || continue
  # 2. Deduplicated queue: allow the task to be queued again while it runs.
  cli ZREM "$todo_set" "$task" >/dev/null || { wait_a_while; put_back; continue; }
  # 3. Do the work.
  echo "working on $task"
  # 4. Notify: the finished task is itself an event, and rules may react to it.
  # 5. Remove it from the taken list. A Lua script runs atomically, as MULTI/EXEC
  #    would, and takes the task as an argument, so it needs no quoting.
  cli EVAL "redis.call('LPUSH', KEYS[1], ARGV[1]) redis.call('LREM', KEYS[2], 1, ARGV[1])" \
    2 global/events "$taken" "$task" >/dev/null || { wait_a_while; put_back; }
done
