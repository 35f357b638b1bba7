"""Names of the Redis keys resc derives from configured ones."""

from __future__ import annotations


def default_taken_queue(input_queue: str) -> str:
    return f"{input_queue}/taken"


def default_failed_queue(input_queue: str) -> str:
    return f"{input_queue}/failed"


def failed_reasons(failed_queue: str) -> str:
    """Hash: failed event -> why each copy of it failed (resc.core.failures)."""
    return f"{failed_queue}/reasons"


def attempts(taken_queue: str) -> str:
    """Hash: event -> how many times its processing was interrupted (resc killed, Redis
    connection lost) while it sat in the taken queue."""
    return f"{taken_queue}/attempts"


def taken_ahead(taken_queue: str) -> str:
    """String: how many events on the taken queue's left (newest) end were taken ahead
    and are not being processed yet; the others are (see lua/recover.lua)."""
    return f"{taken_queue}/ahead"


def taken_owner(taken_queue: str) -> str:
    """String with a time to live: the id of the resc instance that holds the taken
    queue (resc.engine.owner)."""
    return f"{taken_queue}/owner"


# A worker's keys (resc.worker.worker), next to its queue.


def worker_taken_list(queue: str, worker_id: str) -> str:
    """A worker's own taken list."""
    return f"{queue}/taken/{worker_id}"


def worker_heartbeat(queue: str, worker_id: str) -> str:
    """A string key that lives while the worker does (it is refreshed before its TTL)."""
    return f"{queue}/heartbeat/{worker_id}"


def queue_workers(queue: str) -> str:
    """Set: the ids of the workers of a queue, for reapers to check their heartbeats."""
    return f"{queue}/workers"


# Delayed tasks (a make's delay or at), next to their todo queue.


DELAYED = "/delayed"
DELAYED_COUNTER = "/delayed/n"


def delayed_tasks(queue: str) -> str:
    """Sorted set: the tasks of `queue` that are not due yet, as "<n>:<task>" (n makes
    equal tasks distinct members), scored by their due time in unix milliseconds."""
    return queue + DELAYED


def delayed_counter(queue: str) -> str:
    """String: the last n given to a delayed task of `queue` (INCR)."""
    return queue + DELAYED_COUNTER


def delayed_queues(input_queue: str) -> str:
    """Set: the todo queues into which a watcher committed delayed tasks that may not be
    due yet, for the scheduler to find (dropped from it when none are left)."""
    return f"{input_queue}/delayed-queues"
