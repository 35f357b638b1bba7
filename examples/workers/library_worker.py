"""A worker using resc's worker library: the protocol's safety comes with it.

    python examples/workers/library_worker.py REDIS_URL PROCESS_ID

It works on the tasks that configs/example.hjson makes for one process id, from
trt/<id>/todo-queue, and notifies global/events of each one done. Run as many as you
like on one queue: each takes into its own taken list, and if one dies, another puts
its task back into the queue once its heartbeat expires. Stop it with Ctrl-C: it
finishes the task in hand first.
"""

from __future__ import annotations

import sys

from resc.worker import Worker


def main(url: str, process_id: str) -> None:
    worker = Worker(
        url,
        queue=f"trt/{process_id}/todo-queue",
        set=f"trt/{process_id}/todo-set",  # removed when taken: the task may come again
        done_queue="global/events",
    )

    @worker.handler
    def compute(task: str) -> None:
        # The work. Raise to have the task retried (3 times by default, with growing
        # delays), then moved to trt/<id>/todo-queue/failed with the reason.
        print(f"working on {task}", flush=True)

    worker.run()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: library_worker.py REDIS_URL PROCESS_ID", file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1], sys.argv[2])
