"""A worker's settings, checked, and the keys and task options they make: shared by the
threaded Worker and the AsyncWorker, which take the same options."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from typing import Literal

from resc.core.keys import default_failed_queue, queue_workers, worker_heartbeat, worker_taken_list
from resc.worker.store import WorkerKeys
from resc.worker.tasks import TaskOptions


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    worker_id: str
    keys: WorkerKeys
    options: TaskOptions
    concurrency: int
    heartbeat_ttl_s: float
    holder: str  # the heartbeat's value: who holds the id


def worker_settings(
    *,
    connections: int,
    queue: str,
    set: str | None,
    done_queue: str | None,
    zrem: Literal["before", "after"],
    concurrency: int,
    retries: int,
    retry_delay_s: float,
    failed_queue: str | None,
    worker_id: str | None,
    heartbeat_ttl_s: float,
    taken_queue: str | None,
    timeout_s: float | None,
) -> WorkerSettings:
    """ValueError listing every problem; `connections`: how many of redis_url, client=
    and pool= were given."""
    problems = []
    if connections != 1:
        problems.append("give one of redis_url, client= and pool=")
    if not queue:
        problems.append("queue must not be empty")
    if zrem not in ("before", "after"):
        problems.append(f"zrem must be 'before' or 'after', not {zrem!r}")
    if concurrency < 1:
        problems.append(f"concurrency must be at least 1, not {concurrency}")
    if retries < 0 or retry_delay_s < 0:
        problems.append("retries and retry_delay_s must not be negative")
    if heartbeat_ttl_s < 0.01:
        problems.append(f"heartbeat_ttl_s must be at least 0.01, not {heartbeat_ttl_s}")
    if queue and taken_queue == queue:
        problems.append("taken_queue must differ from queue")
    if timeout_s is not None and timeout_s <= 0:
        problems.append(f"timeout_s must be more than 0, not {timeout_s:g}")
    if problems:
        raise ValueError("; ".join(problems))
    worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    keys = WorkerKeys(
        queue=queue,
        taken=taken_queue or worker_taken_list(queue, worker_id),
        heartbeat=None if taken_queue else worker_heartbeat(queue, worker_id),
        workers=queue_workers(queue),
        set=set,
        done_queue=done_queue,
        failed=failed_queue or default_failed_queue(queue),
    )
    options = TaskOptions(
        zrem=zrem,
        retries=retries,
        retry_delay_s=retry_delay_s,
        compatible=bool(taken_queue),
        worker_id=worker_id,
        timeout_s=timeout_s,
        max_abandoned=concurrency,
    )
    return WorkerSettings(
        worker_id=worker_id,
        keys=keys,
        options=options,
        concurrency=concurrency,
        heartbeat_ttl_s=heartbeat_ttl_s,
        holder=f"{socket.gethostname()} pid {os.getpid()}",
    )
