"""A worker in bare redis-py, following the take / do / notify protocol step by step.

    python examples/workers/raw_worker.py REDIS_URL PROCESS_ID

It works on the tasks that configs/example.hjson makes for one process id: takes each
from trt/<id>/todo-queue, removes it from the dedup set, "does" it, then notifies
global/events that it is done. Stop it with Ctrl-C.
"""

from __future__ import annotations

import contextlib
import sys

import redis


def main(url: str, process_id: str) -> None:
    r = redis.Redis.from_url(url)
    queue = f"trt/{process_id}/todo-queue"
    taken = f"trt/{process_id}/taken"
    todo_set = f"trt/{process_id}/todo-set"
    # Tasks left in the taken list by a previous run of this worker go back to the queue.
    while r.lmove(taken, queue, "LEFT", "RIGHT") is not None:
        pass
    while True:
        # 1. Take atomically: the task is always in the queue or in the taken list.
        task = r.blmove(queue, taken, 0, "RIGHT", "LEFT")
        # 2. Deduplicated queue: allow the task to be queued again while it runs.
        r.zrem(todo_set, task)
        # 3. Do the work.
        print(f"working on {task.decode()}", flush=True)
        # 4. Notify: the finished task is itself an event, and rules may react to it.
        # 5. Remove it from the taken list. MULTI/EXEC makes 4 and 5 one step.
        with r.pipeline(transaction=True) as pipe:
            pipe.lpush("global/events", task)
            pipe.lrem(taken, 1, task)
            pipe.execute()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the task in hand stays taken
        main(sys.argv[1], sys.argv[2])
