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
    connection lost) while it was in hand. One per watcher, shared by its instances, so
    that an event that crashes one instance after another is counted by each."""
    return f"{taken_queue}/attempts"


def taken_ahead(taken_list: str) -> str:
    """String: how many events on a taken list's left (newest) end were taken ahead and
    are not being processed yet; the others are (see lua/recover.lua)."""
    return f"{taken_list}/ahead"


def taken_owner(taken_queue: str) -> str:
    """String with a time to live: the id of the older resc (one instance per taken
    queue) that holds the plain taken queue. Only read: while it exists, that list is
    left alone (resc.engine.instances)."""
    return f"{taken_queue}/owner"


# The keys of the instances of a watcher (resc.engine.instances), next to its taken
# queue. An instance id never holds a "/" and is none of the derived words, so that these
# names cannot meet: `<taken_queue>/<id>` is never `<taken_queue>/attempts`.

RESERVED_INSTANCE_IDS = frozenset({"attempts", "ahead", "owner", "instances", "outbox"})


def instance_taken(taken_queue: str, instance: str) -> str:
    """List: the events one instance took and has in hand (oldest on the right)."""
    return f"{taken_queue}/{instance}"


def instance_heartbeat(taken_queue: str, instance: str) -> str:
    """String with a time to live, refreshed while the instance runs: JSON with its host,
    pid and the time to live in milliseconds. Gone: the instance is dead, and any other
    instance puts its taken list back."""
    return f"{taken_queue}/{instance}/heartbeat"


def outbox(taken_list: str) -> str:
    """Hash, on a Redis Cluster: batch id -> the results of a committed batch for slots
    other than its watcher's, until they are applied there (resc.engine.outbox). An
    instance's is next to its taken list."""
    return f"{taken_list}/outbox"


def orphaned_outbox(taken_queue: str) -> str:
    """Hash: the outbox entries of the watcher's instances that are gone, for any of its
    instances to apply (recover.lua moves them here)."""
    return f"{taken_queue}/outbox"


def instances(taken_queue: str) -> str:
    """Set: the ids of the instances that have a taken list for this watcher (alive, or
    dead and not recovered yet)."""
    return f"{taken_queue}/instances"


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
