#!/bin/sh
# A worker with nothing but curl and sh, on resc's HTTP API (promises).
#
#     examples/workers/curl_worker.sh BASE_URL QUEUE
#     examples/workers/curl_worker.sh http://127.0.0.1:9090 trt/plantA/todo-queue
#
# It claims the next task of QUEUE (waiting up to 5 s for one), "does" it, then says it
# is done: resc pushes it to the done queue (global/events) and forgets the claim. A
# claim not done within its timeout (60 s) goes back to the queue by itself, so a worker
# killed mid-task loses nothing. Set RESC_TOKEN when the API asks for a token. Tasks are
# read from the JSON answer with sed: keep them free of quotes and backslashes.
# Stop it with SIGTERM or Ctrl-C: it finishes the task in hand first.

if [ $# -ne 2 ]; then
  echo "usage: curl_worker.sh BASE_URL QUEUE" >&2
  exit 2
fi
base=$1
queue=$2
auth=${RESC_TOKEN:+Authorization: Bearer $RESC_TOKEN}

stopping=
trap 'stopping=1' INT TERM

api() {  # METHOD PATH -> the body on stdout, then a last line with the HTTP status
  curl -sS -X "$1" -H "${auth:-X-No-Token: 1}" -w '\n%{http_code}' "$base$2"
}

while [ -z "$stopping" ]; do
  if ! answer=$(api POST "/v1/queues/$queue/promises?timeout=60s&wait=5s"); then
    sleep 1  # resc unreachable: try again
    continue
  fi
  status=$(printf '%s\n' "$answer" | tail -n 1)
  [ "$status" = 204 ] && continue  # no task within the wait
  if [ "$status" != 200 ]; then
    echo "claim refused ($status): $(printf '%s\n' "$answer" | head -n 1)" >&2
    sleep 1
    continue
  fi
  body=$(printf '%s\n' "$answer" | head -n 1)
  id=$(printf '%s' "$body" | sed -n 's/.*"id":"\([0-9a-f]*\)".*/\1/p')
  task=$(printf '%s' "$body" | sed -n 's/.*"task":"\([^"]*\)".*/\1/p')
  echo "working on $task"
  # The work goes here; on a failure, POST .../promises/$id/fail instead.
  until api POST "/v1/queues/$queue/promises/$id/done" >/dev/null; do
    sleep 1  # resc unreachable: the claim waits for us until its deadline
  done
done
