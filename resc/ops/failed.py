"""Every failed list of a config, for `resc failed`: listing, requeuing and deleting.

The failed lists: each watcher's failed queue (its events go back to its input queue)
and each todo queue's `<queue>/failed` (resc.worker's, whose tasks go back to that todo
queue). Todo queues named by patterns with variables are found by a SCAN glob (the
make's queue_glob, or one given by the user), bounded.

Safe while the daemon and workers run: what is changed is decided on a snapshot read at
the start, and each copy is then moved or deleted by one Lua script (resc/ops/lua) that
does nothing when the copy is no longer there. A copy that fails again meanwhile is a
new copy, never in the snapshot, so no run loops on its own requeued items.

On a Redis Cluster the SCANs go to every master, and each script to the master of its
keys' slot: a failed list, its reasons, its queue and that queue's set or attempts hash
share a slot in a config without slot errors (`resc check`); others are refused.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Literal

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.retry import Retry

from resc.config.models import Config
from resc.config.todo import TodoSpec, match_pattern, todo_specs
from resc.connection import clients
from resc.connection.edge import converted_errors, redact_url
from resc.core.errors import StoreError
from resc.core.failures import FailedRecord, decode
from resc.core.keys import attempts, default_failed_queue, failed_reasons
from resc.core.slots import same_slot

_LUA = {
    name: (files("resc.ops") / "lua" / f"{name}.lua").read_text("utf-8")
    for name in ("requeue_failed", "delete_failed")
}
# Keys read per HMGET and names matched per SCAN call.
_CHUNK = 1000

Kind = Literal["watcher", "worker"]


@dataclass(frozen=True, slots=True)
class FailedList:
    """A failed list and where its items go back. `set` is the todo queue's dedup set;
    `set_unknown` when the config's make has a set that cannot be named from the queue."""

    name: str
    kind: Kind
    queue: str  # the watcher's input queue, or the worker's todo queue
    set: str | None = None
    set_unknown: bool = False
    attempts: str | None = None  # a watcher's attempts hash, forgotten on requeue

    @property
    def reasons(self) -> str:
        return failed_reasons(self.name)


@dataclass(frozen=True, slots=True)
class FailedItem:
    """One copy in a failed list; `record` None when nothing is kept about it."""

    list: FailedList
    text: bytes
    record: FailedRecord | None


@dataclass(frozen=True, slots=True)
class Found:
    """The failed lists found, and the globs whose scan stopped at the bound."""

    lists: list[FailedList]
    truncated: list[str]


@dataclass
class Outcome:
    """What a requeue or delete did, per copy of the snapshot."""

    done: int = 0
    already_queued: int = 0  # requeue: the set held the task, so it was not pushed
    gone: int = 0  # no longer in the failed list when its turn came


def _watcher_lists(config: Config) -> list[FailedList]:
    return [
        FailedList(w.failed_queue, "watcher", w.input_queue, attempts=attempts(w.taken_queue))
        for w in config.watchers
    ]


def _worker_list(queue: str, specs: list[TodoSpec]) -> FailedList:
    for spec in specs:
        if match_pattern(spec.queue, queue) is not None:
            named = spec.set_of(queue)
            return FailedList(
                default_failed_queue(queue),
                "worker",
                queue,
                set=named,
                set_unknown=spec.set is not None and named is None,
            )
    return FailedList(default_failed_queue(queue), "worker", queue)


class FailedStore:
    """A connection to the config's Redis for the failed lists."""

    def __init__(self, url: str) -> None:
        """StoreError when redis-py cannot use the URL."""
        self.display_url = redact_url(url)
        self._url = url
        # No retry: a re-sent script whose reply was lost would move a second copy.
        self._options: dict[str, Any] = {
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            "retry": Retry(NoBackoff(), 0),
            "client_name": "resc-failed",
        }
        self._client = clients.ProbedClient(url, self._options)
        # The scripts, registered on the client they were made for.
        self._scripts: dict[str, Script] = {}
        self._scripts_of: redis.Redis | RedisCluster | None = None
        if self._client.current is not None:
            self._register(self._client.current)

    def close(self) -> None:
        self._client.close()

    @property
    def _redis(self) -> redis.Redis | RedisCluster:
        """The client, made (or found to be a cluster's: `INFO cluster`) at the first
        command, inside its caller's converted_errors."""
        client = self._client.get()
        if client is not self._scripts_of:
            self._register(client)
        return client

    def _register(self, client: redis.Redis | RedisCluster) -> None:
        self._scripts = {name: client.register_script(src) for name, src in _LUA.items()}
        self._scripts_of = client

    def _script(self, name: str, keys: list[str]) -> Script:
        """The script; on a cluster, a StoreError when its keys are in several slots (a
        config `resc check` finds slot errors in)."""
        client = self._redis
        if isinstance(client, RedisCluster) and not same_slot(*keys):
            raise StoreError(
                f"{', '.join(keys)} are not in one slot of the Redis Cluster, so one script "
                "cannot move a copy between them: give them one hash tag (`resc check` "
                "says what to write)"
            )
        return self._scripts[name]

    def find(self, config: Config, globs: Iterable[str], most_keys: int) -> Found:
        """The watchers' failed lists, then those of the config's literal todo queues,
        then those found by scanning `<glob>/failed` for each queue_glob of the config
        and each of `globs` (at most most_keys names per glob)."""
        specs = todo_specs(config)
        lists = {fl.name: fl for fl in _watcher_lists(config)}
        for spec in specs:
            if spec.literal:
                lists.setdefault(
                    default_failed_queue(spec.queue.source), _worker_list(spec.queue.source, specs)
                )
        all_globs = [s.glob for s in specs if s.glob is not None and not s.literal]
        all_globs += [g for g in globs if g not in all_globs]
        truncated = []
        with converted_errors(f"scanning {self.display_url}"):
            for glob in all_globs:
                names, stopped = self._scan(default_failed_queue(glob), most_keys)
                if stopped:
                    truncated.append(glob)
                for name in sorted(names):
                    queue = name.removesuffix("/failed")
                    lists.setdefault(name, _worker_list(queue, specs))
        return Found(list(lists.values()), truncated)

    def _scan(self, glob: str, most: int) -> tuple[set[str], bool]:
        names: set[str] = set()
        for raw in self._redis.scan_iter(match=glob, count=_CHUNK, _type="list"):
            names.add(raw.decode("utf-8", "backslashreplace"))
            if len(names) > most:
                return set(sorted(names)[:most]), True
        return names, False

    def items(self, failed: FailedList, most: int) -> tuple[list[FailedItem], int]:
        """The oldest `most` copies of a failed list, oldest first, with their records,
        and the list's length."""
        with converted_errors(f"reading {failed.name}"):
            for key, wanted in ((failed.name, "list"), (failed.reasons, "hash")):
                kind = self._redis.type(key).decode()  # type: ignore[union-attr]
                if kind not in ("none", wanted):
                    raise StoreError(f"{key} holds a {kind}, not a {wanted}")
            pipe = self._redis.pipeline(transaction=True)
            pipe.llen(failed.name)
            pipe.lrange(failed.name, -most, -1)
            length, newest_first = pipe.execute()
            texts: list[bytes] = list(reversed(newest_first))
            unique = list(dict.fromkeys(texts))
            records: dict[bytes, list[FailedRecord]] = {}
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start : start + _CHUNK]
                values = self._redis.hmget(failed.reasons, chunk)
                records.update(zip(chunk, (decode(v) for v in values), strict=True))
        # The n-th copy of a text, counting from the oldest, has its n-th record.
        seen: dict[bytes, int] = {}
        found = []
        for text in texts:
            n = seen.get(text, 0)
            seen[text] = n + 1
            kept = records.get(text, [])
            found.append(FailedItem(failed, text, kept[n] if n < len(kept) else None))
        return found, int(length)

    def requeue(self, items: Iterable[FailedItem], outcome: Outcome) -> None:
        """Each copy back to its queue, oldest first, one script per copy, counted in
        `outcome` as it goes (so that it tells what was done when Redis is lost)."""
        for item in items:
            fl = item.list
            keys: list[str]
            if fl.attempts is not None:
                keys, mode = [fl.name, fl.reasons, fl.queue, fl.attempts], "attempts"
            elif fl.set is not None:
                keys, mode = [fl.name, fl.reasons, fl.queue, fl.set], "set"
            else:
                keys, mode = [fl.name, fl.reasons, fl.queue], "none"
            with converted_errors(f"moving a copy from {fl.name} back to {fl.queue}"):
                moved = int(
                    self._script("requeue_failed", keys)(
                        keys=keys, args=[item.text, mode, int(time.time())]
                    )
                )
            if moved == 1:
                outcome.done += 1
            elif moved == 2:
                outcome.already_queued += 1
            else:
                outcome.gone += 1

    def delete(self, items: Iterable[FailedItem], outcome: Outcome) -> None:
        """Delete each copy with its record, oldest first, one script per copy, counted
        in `outcome` as it goes."""
        for item in items:
            fl = item.list
            with converted_errors(f"deleting a copy from {fl.name}"):
                keys = [fl.name, fl.reasons]
                deleted = int(self._script("delete_failed", keys)(keys=keys, args=[item.text]))
            if deleted:
                outcome.done += 1
            else:
                outcome.gone += 1
