"""Reading queue lengths for `resc status`: plain redis-py reads (TYPE, LLEN, ZCARD, HLEN,
SCARD, LINDEX, SCAN), never a write.

Which keys: each watcher's input, taken and failed queues, and the keys matching globs
given on the command line. The todo queues, with their sets, workers and failed lists,
are read by resc.ops.todo_status. Names built from events cannot be listed without
scanning, which is left to the user (a glob on the command line or a make's queue_glob).

The age of the oldest taken event is not stored anywhere (a taken queue is a plain list),
so it is only measured while watching: the oldest element (the list's tail) is followed
from sample to sample, and its age is the time it has been seen there, a lower bound.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from resc.config.models import Config
from resc.connection import clients
from resc.connection.edge import redact_url
from resc.core.errors import StoreError
from resc.core.keys import failed_reasons, instance_heartbeat, instance_taken, instances
from resc.engine.instances import parse_heartbeat
from resc.ops.todo_status import TodoSample, find_todo_queues, read_todo_queues

_LENGTH = {"list": "llen", "zset": "zcard", "hash": "hlen", "set": "scard"}
# The type each role's key should have.
_EXPECTED = {"input": "list", "taken": "list", "failed": "list"}


@dataclass(frozen=True, slots=True)
class Key:
    """A key to show; `role` is input, taken, failed, or scan (a glob's)."""

    name: str
    role: str


@dataclass(frozen=True, slots=True)
class Sample:
    """One key at one instant. `length` is None for a type without one."""

    key: Key
    type: str  # Redis's TYPE: list, zset, hash, ..., or none when the key does not exist
    length: int | None
    reasons: int | None = None  # a failed queue's reasons hash size
    oldest: bytes | None = None  # a taken queue's oldest event

    @property
    def wrong_type(self) -> str | None:
        """The expected type, when the key holds another one."""
        expected = _EXPECTED.get(self.key.role)
        return expected if self.type not in ("none", expected) and expected else None


def configured_keys(config: Config) -> list[Key]:
    """The keys of the config's watchers, in config order."""
    keys: dict[str, Key] = {}
    for watcher in config.watchers:
        for name, role in (
            (watcher.input_queue, "input"),
            (watcher.taken_queue, "taken"),
            (watcher.failed_queue, "failed"),
        ):
            keys.setdefault(name, Key(name, role))
    return list(keys.values())


class StatusReader:
    """A read-only connection to the config's Redis: on a Redis Cluster (a cluster URL,
    or a server URL of a node, asked at the first read), a RedisCluster, whose SCANs go to
    every master and whose pipelines send each read to its key's master."""

    def __init__(self, url: str) -> None:
        """StoreError when redis-py cannot use the URL."""
        self.display_url = redact_url(url)
        self._url = url
        # No retry: an unreachable Redis is reported at once rather than after backoff.
        self._options: dict[str, Any] = {
            "socket_timeout": 5,
            "socket_connect_timeout": 5,
            "retry": Retry(NoBackoff(), 0),
            "client_name": "resc-status",
        }
        self._client = clients.ProbedClient(url, self._options)

    def close(self) -> None:
        self._client.close()

    @property
    def _redis(self) -> redis.Redis | RedisCluster:
        """The client; made (or found to be a cluster's) at the first read. redis-py's
        errors, or RedisClusterException."""
        return self._client.get()

    def sample(
        self, keys: list[Key], globs: Iterable[str], shown: Iterable[str] = ()
    ) -> list[Sample]:
        """Every key's type and length, configured keys first, then glob matches by name
        but those `shown` elsewhere. StoreError when Redis cannot be read."""
        try:
            return self._sample(keys, globs, set(shown))
        except (redis.RedisError, RedisClusterException) as exc:
            raise StoreError(f"cannot read Redis at {self.display_url}: {exc}") from None

    def todo(self, config: Config, globs: Iterable[str], most_keys: int) -> TodoRead:
        """The todo queues of the config, and those the globs find (at most most_keys
        per glob). StoreError when Redis cannot be read."""
        try:
            found = find_todo_queues(self._redis, config, globs, most_keys)
            return TodoRead(read_todo_queues(self._redis, found), found.truncated)
        except (redis.RedisError, RedisClusterException) as exc:
            raise StoreError(f"cannot read Redis at {self.display_url}: {exc}") from None

    def instances(self, config: Config) -> list[InstanceSample]:
        """The registered instances of every watcher, by watcher then id. StoreError when
        Redis cannot be read."""
        try:
            return self._instances(config)
        except (redis.RedisError, RedisClusterException) as exc:
            raise StoreError(f"cannot read Redis at {self.display_url}: {exc}") from None

    def _instances(self, config: Config) -> list[InstanceSample]:
        watchers = list({w.taken_queue: w for w in config.watchers}.values())
        pipe = self._redis.pipeline(transaction=False)
        for watcher in watchers:
            pipe.type(instances(watcher.taken_queue))
        registry_types = [_text(t) for t in pipe.execute()]
        pipe = self._redis.pipeline(transaction=False)
        for watcher, kind in zip(watchers, registry_types, strict=True):
            if kind == "set":
                pipe.smembers(instances(watcher.taken_queue))
        members = iter(pipe.execute())
        found: list[tuple[str, str, str]] = []  # (watcher, taken queue, id)
        for watcher, kind in zip(watchers, registry_types, strict=True):
            if kind == "set":
                ids = sorted(_text(i) for i in next(members))
                found += [(watcher.input_queue, watcher.taken_queue, i) for i in ids]
        pipe = self._redis.pipeline(transaction=False)
        for _, taken_queue, i in found:
            beat = instance_heartbeat(taken_queue, i)
            pipe.type(beat)
            pipe.get(beat)
            pipe.pttl(beat)
            pipe.type(instance_taken(taken_queue, i))
            pipe.llen(instance_taken(taken_queue, i))
        replies = pipe.execute(raise_on_error=False)
        samples = []
        for n, (watcher_name, _, i) in enumerate(found):
            beat_type, value, pttl, list_type, length = replies[5 * n : 5 * n + 5]
            fields = parse_heartbeat(value) if _text(beat_type) == "string" else {}
            ttl_ms = fields.get("ttl_ms")
            age = (
                max(0.0, (ttl_ms - pttl) / 1000)
                if isinstance(ttl_ms, int) and isinstance(pttl, int) and pttl >= 0
                else None
            )
            host, pid = fields.get("host"), fields.get("pid")
            wrong = None
            if _text(list_type) not in ("list", "none"):
                wrong = f"its taken list holds a {_text(list_type)}"
            elif _text(beat_type) not in ("string", "none"):
                wrong = f"its heartbeat holds a {_text(beat_type)}"
            samples.append(
                InstanceSample(
                    watcher_name,
                    i,
                    host if isinstance(host, str) else None,
                    pid if isinstance(pid, int) else None,
                    _text(beat_type) == "string",
                    age,
                    pttl / 1000 if isinstance(pttl, int) and pttl >= 0 else None,
                    length if isinstance(length, int) else 0,
                    wrong,
                )
            )
        return samples

    def _sample(self, keys: list[Key], globs: Iterable[str], shown: set[str]) -> list[Sample]:
        known = {key.name for key in keys} | shown
        found: set[str] = set()
        for glob in globs:
            for name in self._redis.scan_iter(match=glob, count=1000):
                found.add(name.decode("utf-8", "backslashreplace"))
        keys = keys + [Key(name, "scan") for name in sorted(found - known)]
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.type(key.name)
        types = [t.decode() if isinstance(t, bytes) else str(t) for t in pipe.execute()]
        pipe = self._redis.pipeline(transaction=False)
        reads: list[tuple[int, str]] = []  # (key index, what) for each queued command
        for i, (key, kind) in enumerate(zip(keys, types, strict=True)):
            if kind in _LENGTH:
                getattr(pipe, _LENGTH[kind])(key.name)
                reads.append((i, "length"))
            if key.role == "failed":
                pipe.hlen(failed_reasons(key.name))
                reads.append((i, "reasons"))
            if key.role == "taken" and kind == "list":
                pipe.lindex(key.name, -1)
                reads.append((i, "oldest"))
        values: dict[int, dict[str, Any]] = {i: {} for i in range(len(keys))}
        for (i, what), value in zip(reads, pipe.execute(), strict=True):
            values[i][what] = value
        return [
            Sample(
                key,
                kind,
                values[i].get("length", 0 if kind == "none" else None),
                values[i].get("reasons"),
                values[i].get("oldest"),
            )
            for i, (key, kind) in enumerate(zip(keys, types, strict=True))
        ]


@dataclass(frozen=True, slots=True)
class InstanceSample:
    """One registered instance of a watcher (resc.engine.instances): alive while its
    heartbeat exists; `in_hand` is the length of its taken list."""

    watcher: str
    id: str
    host: str | None
    pid: int | None
    alive: bool
    heartbeat_age_s: float | None  # since its last refresh (time to live - remaining)
    heartbeat_expires_in_s: float | None
    in_hand: int
    wrong_type: str | None = None  # "its taken list holds a hash", say


@dataclass(frozen=True, slots=True)
class TodoRead:
    """The todo queues read, and the globs whose scan stopped at the bound."""

    samples: list[TodoSample]
    truncated: list[str]

    def names(self) -> set[str]:
        """Every key these samples show, kept out of the rows of globs."""
        names = set()
        for s in self.samples:
            names |= {s.queue, f"{s.queue}/failed", f"{s.queue}/workers"}
            names |= {f"{s.queue}/taken/{w.id}" for w in s.workers}
            names |= {f"{s.queue}/heartbeat/{w.id}" for w in s.workers}
            if s.set is not None:
                names.add(s.set)
        return names


@dataclass(frozen=True, slots=True)
class Row:
    """A sample as shown: with its rate of change and, for a taken queue, how long its
    oldest event has been seen there (None when not measured)."""

    sample: Sample
    rate_per_s: float | None
    oldest_age_s: float | None


@dataclass
class Tracker:
    """Follows samples over time: rates of change and the oldest taken events' ages."""

    previous: dict[str, int | None] = field(default_factory=dict)
    previous_time: float | None = None
    oldest_since: dict[str, tuple[bytes, float]] = field(default_factory=dict)
    held_since: dict[tuple[str, str], tuple[bytes, float]] = field(default_factory=dict)
    longest_ttl_ms: dict[tuple[str, str], int] = field(default_factory=dict)

    def heartbeat_ages(self, samples: list[TodoSample]) -> dict[tuple[str, str], float]:
        """(queue, worker id) -> how long ago the worker refreshed its heartbeat, at
        least: the longest time to live seen for it (each refresh sets the whole TTL)
        minus what it has left now."""
        ages = {}
        longest = {}
        for s in samples:
            for w in s.workers:
                if w.heartbeat_ttl_ms is None:
                    continue
                key = (s.queue, w.id)
                longest[key] = max(self.longest_ttl_ms.get(key, 0), w.heartbeat_ttl_ms)
                ages[key] = (longest[key] - w.heartbeat_ttl_ms) / 1000
        self.longest_ttl_ms = longest
        return ages

    def held_for(self, samples: list[TodoSample], now: float) -> dict[tuple[str, str], float]:
        """(queue, worker id) -> how long the worker's oldest task in hand has been seen
        in its taken list, from the first update that saw it there (a lower bound)."""
        ages = {}
        seen_now = {}
        for s in samples:
            for w in s.workers:
                if not w.tasks:
                    continue
                key = (s.queue, w.id)
                seen = self.held_since.get(key)
                if seen is None or seen[0] != w.tasks[0]:
                    seen = (w.tasks[0], now)
                seen_now[key] = seen
                ages[key] = now - seen[1]
        self.held_since = seen_now
        return ages

    def update(self, samples: list[Sample], now: float) -> list[Row]:
        """The rows of samples taken at `now` (seconds); rates are per second since the
        previous update, ages count from the first update that saw the oldest event."""
        rows = []
        for s in samples:
            before = self.previous.get(s.key.name)
            rate = None
            if self.previous_time is not None and before is not None and s.length is not None:
                rate = (s.length - before) / (now - self.previous_time)
            age = None
            if s.oldest is not None:
                seen = self.oldest_since.get(s.key.name)
                if seen is None or seen[0] != s.oldest:
                    seen = self.oldest_since[s.key.name] = (s.oldest, now)
                age = now - seen[1]
            else:
                self.oldest_since.pop(s.key.name, None)
            rows.append(Row(s, rate, age))
        self.previous = {s.key.name: s.length for s in samples}
        self.previous_time = now
        return rows


def _text(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)
