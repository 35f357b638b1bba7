"""What users wait on: the todo queues the config's makes name, read for `resc status`
and the metrics. For each queue: its length, its dedup set's size and the age of its
oldest task (the set's scores are the unix times at which resc added the tasks; without
a set the age is unknown), its failed list's length, and the workers registered on it
(resc.worker's keys: resc.core.keys) with their heartbeat and the tasks they hold.

Todo queues named by patterns with variables are found by SCAN with a glob (the make's
`queue_glob`, or given by the user), at most `most_keys` names per glob: the queues
themselves, and `<glob>/workers`, `<glob>/failed` and `<glob>/delayed` for the queues
that are empty now.

It also counts the queue's delayed tasks (a make's delay or at) and when the first is due.

Only reads: TYPE, LLEN, ZCARD, ZRANGE, SMEMBERS, PTTL, LRANGE, SCAN. A heartbeat holds
no time: what is known of it is how long it has left (PTTL). Its age is that of the
TTL the worker gave it minus what is left, and only a watcher that saw it refreshed
knows that TTL (resc.ops.status.Tracker). OBJECT IDLETIME is no substitute: a SET
that overwrites a key was seen to leave its idle time running.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import redis
from redis.cluster import RedisCluster

from resc.config.models import Config
from resc.config.todo import TodoSpec, glob_of, match_pattern, todo_specs
from resc.core.keys import (
    DELAYED,
    default_failed_queue,
    delayed_tasks,
    queue_workers,
    worker_heartbeat,
    worker_taken_list,
)

MOST_TASKS_SHOWN = 100
_SUFFIXES = (("", "list"), ("/failed", "list"), ("/workers", "set"), (DELAYED, "zset"))


@dataclass(frozen=True, slots=True)
class WorkerSample:
    """A registered worker of a todo queue."""

    id: str
    alive: bool  # its heartbeat key exists (else it is dead, and reaped soon)
    heartbeat_ttl_ms: int | None  # what the heartbeat has left; None: dead, or no TTL
    held: int  # tasks in its taken list
    tasks: tuple[bytes, ...]  # the oldest MOST_TASKS_SHOWN of them, oldest first


@dataclass(frozen=True, slots=True)
class TodoSample:
    """A todo queue at one instant. `pattern` is the config's queue pattern it comes from."""

    queue: str
    pattern: str
    length: int | None  # None when the key holds another type
    set: str | None
    set_size: int | None
    oldest_score: float | None  # the set's lowest score: when its oldest task was made
    failed: int | None
    workers: tuple[WorkerSample, ...]
    wrong_types: tuple[str, ...] = ()  # "KEY holds a T, not a U" for each such key
    set_unknown: bool = False  # the make has a set that cannot be named from the queue
    delayed: int | None = 0  # tasks not due yet (a make's delay or at)
    next_due: float | None = None  # when the first of them is due, unix seconds

    def oldest_age_s(self, now: float) -> float | None:
        """The age of the oldest task its set holds; None without a set, or an empty one."""
        return None if self.oldest_score is None else max(0.0, now - self.oldest_score)

    @property
    def held(self) -> int:
        return sum(w.held for w in self.workers)


@dataclass(frozen=True, slots=True)
class TodoQueues:
    """The todo queues to read, and the globs whose scan stopped at the bound."""

    queues: list[tuple[str, TodoSpec]] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)


def _spec_of(name: str, specs: list[TodoSpec]) -> TodoSpec | None:
    return next((s for s in specs if match_pattern(s.queue, name) is not None), None)


def unlisted_patterns(config: Config, globs: Iterable[str]) -> list[str]:
    """The queue patterns with variables that neither their queue_glob nor one of the
    globs lists, and the set patterns that cannot be named from their queue's name."""
    globs = list(globs)
    hidden = []
    for spec in todo_specs(config):
        if spec.literal:
            covered = True
        else:
            covered = spec.glob is not None or any(
                fnmatchcase(glob_of(spec.queue.source), g) for g in globs
            )
            if not covered:
                hidden.append(spec.queue.source)
        if covered and spec.set is not None and not spec.set.names <= spec.queue.names:
            hidden.append(spec.set.source)
    return hidden


def find_todo_queues(
    client: redis.Redis | RedisCluster, config: Config, globs: Iterable[str], most_keys: int
) -> TodoQueues:
    """The literal todo queues of the config, then those its queue_globs and `globs` find
    that a make's queue pattern names, by name. Raises redis-py's errors."""
    specs = todo_specs(config)
    found: dict[str, TodoSpec] = {s.queue.source: s for s in specs if s.literal}
    scans = [s.glob for s in specs if s.glob is not None and not s.literal]
    scans += [g for g in globs if g not in scans]
    truncated = []
    scanned: set[str] = set()
    for glob in scans:
        names: set[str] = set()
        for suffix, kind in _SUFFIXES:
            for raw in client.scan_iter(match=glob + suffix, count=1000, _type=kind):
                name = raw.decode("utf-8", "backslashreplace").removesuffix(suffix)
                names.add(name)
                if len(names) > most_keys:
                    break
            if len(names) > most_keys:
                break
        if len(names) > most_keys:
            truncated.append(glob)
        scanned |= set(sorted(names)[:most_keys])
    for name in sorted(scanned - found.keys()):
        # A glob may match other keys too: those stay rows of the keys they are.
        spec = _spec_of(name, specs)
        if spec is not None:
            found[name] = spec
    return TodoQueues(list(found.items()), truncated)


def _value(reply: Any) -> Any:
    """A pipeline reply, None for an error (a key of another type, OBJECT under LFU)."""
    return None if isinstance(reply, Exception) else reply


def _kind(reply: Any) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def read_todo_queues(client: redis.Redis | RedisCluster, queues: TodoQueues) -> list[TodoSample]:
    """Every queue's sample, in two round trips. Raises redis-py's errors."""
    named = []
    for queue, spec in queues.queues:
        set_name = spec.set_of(queue)
        unknown = spec.set is not None and set_name is None
        named.append((queue, spec, set_name, unknown))
    pipe = client.pipeline(transaction=False)
    for queue, _, set_name, _ in named:
        pipe.type(queue)
        pipe.llen(queue)
        pipe.type(set_name or queue)
        pipe.zcard(set_name or queue)
        pipe.zrange(set_name or queue, 0, 0, withscores=True)
        pipe.type(default_failed_queue(queue))
        pipe.llen(default_failed_queue(queue))
        pipe.smembers(queue_workers(queue))
        pipe.type(delayed_tasks(queue))
        pipe.zcard(delayed_tasks(queue))
        pipe.zrange(delayed_tasks(queue), 0, 0, withscores=True)
    replies = [_value(r) for r in pipe.execute(raise_on_error=False)]
    per_queue = [replies[i : i + 11] for i in range(0, len(replies), 11)]
    pipe = client.pipeline(transaction=False)
    worker_ids: list[list[str]] = []
    for (queue, _, _, _), reply in zip(named, per_queue, strict=True):
        ids = sorted(m.decode("utf-8", "backslashreplace") for m in reply[7] or ())
        worker_ids.append(ids)
        for worker_id in ids:
            pipe.pttl(worker_heartbeat(queue, worker_id))
            pipe.llen(worker_taken_list(queue, worker_id))
            pipe.lrange(worker_taken_list(queue, worker_id), -MOST_TASKS_SHOWN, -1)
    worker_replies = [_value(r) for r in pipe.execute(raise_on_error=False)]
    samples = []
    at = 0
    for (queue, spec, set_name, unknown), reply, ids in zip(
        named, per_queue, worker_ids, strict=True
    ):
        workers = []
        for worker_id in ids:
            ttl, held, tasks = worker_replies[at : at + 3]
            at += 3
            alive = ttl != -2  # PTTL: -2 for no key, -1 for a key without a TTL
            workers.append(
                WorkerSample(
                    worker_id,
                    alive,
                    ttl if isinstance(ttl, int) and ttl >= 0 else None,
                    held or 0,
                    tuple(reversed(tasks or ())),
                )
            )
        queue_type, set_type, failed_type = _kind(reply[0]), _kind(reply[2]), _kind(reply[5])
        delayed_type = _kind(reply[8])
        wrong = [
            f"{key} holds a {kind}, not a {wanted}"
            for key, kind, wanted in (
                (queue, queue_type, "list"),
                (set_name, set_type, "zset"),
                (default_failed_queue(queue), failed_type, "list"),
                (delayed_tasks(queue), delayed_type, "zset"),
            )
            if key is not None and kind not in ("none", wanted)
        ]
        oldest = reply[4][0][1] if set_name is not None and reply[4] else None
        samples.append(
            TodoSample(
                queue,
                spec.queue.source,
                reply[1] if queue_type in ("list", "none") else None,
                set_name,
                reply[3] if set_name is not None and set_type in ("zset", "none") else None,
                float(oldest) if oldest is not None else None,
                reply[6] if failed_type in ("list", "none") else None,
                tuple(workers),
                tuple(wrong),
                unknown,
                reply[9] if delayed_type in ("zset", "none") else None,
                reply[10][0][1] / 1000 if delayed_type == "zset" and reply[10] else None,
            )
        )
    return samples
