"""A worker in bare redis-py, following the take / do / notify protocol step by step.

    python examples/workers/raw_worker.py REDIS_URL PROCESS_ID

It works on the tasks that configs/example.hjson makes for one process id: takes each
from trt/<id>/todo-queue, removes it from the dedup set, "does" it, then notifies
global/events that it is done. It waits out Redis restarts and failovers. Stop it with
Ctrl-C.
"""

from __future__ import annotations

import contextlib
import random
import sys
import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

# A take waits this long at most, then asks again: the socket timeout below can then
# stay short enough to notice a frozen server.
TAKE_BLOCK_S = 1
# After a lost connection: wait 0.1 s, then twice as long each time, up to 5 s.
FIRST_DELAY_S = 0.1
MAX_DELAY_S = 5.0


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        # redis-py 8 gives up on a reply after 5 s by default, which would cut a longer
        # BLMOVE: wait longer than a take blocks.
        socket_timeout=TAKE_BLOCK_S + 5,
        socket_connect_timeout=5,
        # No automatic re-send: a command whose reply was lost may have run (a take, a
        # notice), and sending it again would take a second task or notify twice. main()
        # connects again itself and trusts the taken list instead.
        retry=Retry(NoBackoff(), 0),
    )


def put_back(r: redis.Redis, queue: str, taken: str) -> None:
    # The taken list holds what this worker took and did not notify: tasks of an earlier
    # run, and after a lost connection the task in hand, whose notice may not have been
    # sent. Back into the queue with them, to be done again: the notice below removes a
    # task from the taken list in the same step, so a task still there was not notified.
    while r.lmove(taken, queue, "LEFT", "RIGHT") is not None:
        pass


def work(r: redis.Redis, queue: str, taken: str, todo_set: str) -> None:
    while True:
        # 1. Take atomically: the task is always in the queue or in the taken list.
        task = r.blmove(queue, taken, TAKE_BLOCK_S, "RIGHT", "LEFT")
        if task is None:
            continue
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


def is_lost(error: redis.RedisError) -> bool:
    """True for errors that mean "this server cannot serve us now": wait and connect
    again. Any other error (a key of the wrong type, a wrong password) is a mistake to
    show, not to wait out."""
    if isinstance(error, redis.AuthenticationError):
        return False
    # A failover: the server became a replica (READONLY), or it was one when it dropped
    # our blocked take (UNBLOCKED), or it is loading its data (a ConnectionError).
    if isinstance(error, (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError)):
        return True
    return str(error).startswith("UNBLOCKED")


def main(url: str, process_id: str) -> None:
    queue = f"trt/{process_id}/todo-queue"
    taken = f"trt/{process_id}/taken"
    todo_set = f"trt/{process_id}/todo-set"
    delay_s, lost = FIRST_DELAY_S, False
    while True:
        r = connect(url)
        try:
            put_back(r, queue, taken)
            if lost:
                print("raw_worker: Redis is back", file=sys.stderr)
            delay_s, lost = FIRST_DELAY_S, False
            work(r, queue, taken, todo_set)
        except redis.RedisError as error:
            if not is_lost(error):
                sys.exit(f"raw_worker: Redis refused a command: {error}")
            if not lost:
                print(f"raw_worker: Redis unavailable, retrying ({error})", file=sys.stderr)
            lost = True
            # Jitter: workers that lost the same server do not all come back at one instant.
            time.sleep(delay_s * random.uniform(0.5, 1))
            delay_s = min(delay_s * 2, MAX_DELAY_S)
        finally:
            r.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: raw_worker.py REDIS_URL PROCESS_ID", file=sys.stderr)
        sys.exit(2)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the task in hand stays taken
        try:
            main(sys.argv[1], sys.argv[2])
        except ValueError as error:  # a URL redis-py cannot read
            sys.exit(f"raw_worker: {error}")
