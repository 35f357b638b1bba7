"""Dedup set members that never expire, removed: the daemon's periodic, bounded sweep of
the sets of the makes that have a `set_ttl`.

A task stays in its dedup set until a worker ZREMs it. A worker that dies before (one
that is not resc.worker: resc.worker's reaper puts a dead worker's tasks back in the
queue) leaves a member that keeps that task from ever being made again. A member whose
score (the unix time at which resc added it) is older than set_ttl, and whose task is
neither in the queue nor in the taken list of a registered worker of that queue, is
removed by lua/expire_member.lua, which checks both in the same atomic step as the ZREM.

Bounded: each sweep reads about MOST_SETS sets per make (a SCAN step may give a few
more) and MOST_MEMBERS expired members per set; the next sweep goes on from there.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

import redis
from redis.cluster import RedisCluster

from resc.config.models import Config
from resc.config.patterns import Pattern
from resc.config.todo import glob_of, match_pattern
from resc.connection import clients
from resc.connection.edge import converted_errors, redact_url
from resc.core.errors import StoreError
from resc.core.keys import queue_workers, worker_taken_list
from resc.core.logs import get_logger

log = get_logger("resc.expiry")

_SCRIPT = (files("resc.engine") / "lua" / "expire_member.lua").read_text("utf-8")
MOST_SETS = 1000
MOST_MEMBERS = 1000
SCAN_COUNT = 1000  # SCAN's COUNT hint: keys looked at per step
# A sweep every quarter of the shortest set_ttl, within these bounds.
SWEEP_MIN_S = 0.5
SWEEP_MAX_S = 60.0
CLOSE_WAIT_S = 0.5


@dataclass(frozen=True, slots=True)
class Target:
    """A make's queue and set patterns, with the longest set_ttl given for them."""

    queue: Pattern
    set: Pattern
    set_ttl_s: float


@dataclass
class ExpiryStats:
    """What the sweeps did, for the metrics: members removed per set pattern (the
    config's, never a name made from an event), and sweeps that failed. Kept by the
    daemon across reloads."""

    removed: Counter[str] = field(default_factory=Counter)
    failed_sweeps: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def targets(config: Config) -> list[Target]:
    """The (queue, set) pairs of the makes with a set_ttl, theirs or their watcher's."""
    found: dict[tuple[str, str], Target] = {}
    for watcher in config.watchers:
        for rule in watcher.rules:
            for make in rule.make:
                ttl = make.set_ttl if make.set_ttl is not None else watcher.set_ttl
                if ttl is None or make.set is None:
                    continue
                if make.queue.names - make.set.names:
                    continue  # a watcher's set_ttl on a set that cannot name its queue
                key = (make.queue.source, make.set.source)
                known = found.get(key)
                if known is None or known.set_ttl_s < ttl:
                    found[key] = Target(make.queue, make.set, ttl)
    return list(found.values())


def sweep_interval_s(found: list[Target]) -> float:
    shortest = min(t.set_ttl_s for t in found)
    return max(SWEEP_MIN_S, min(SWEEP_MAX_S, shortest / 4))


class SetExpiry:
    """The sweeping thread. start(), use(config) after a reload, close()."""

    def __init__(self, config: Config, stats: ExpiryStats) -> None:
        self.stats = stats
        self._config = config
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="set expiry", daemon=True)
        self._redis = clients.ClientOf("resc-set-expiry")
        # Where the next sweep goes on, so that a bounded sweep reaches everything in
        # turn: the SCAN cursor of each set pattern, and the number of expired members
        # kept (queued or taken) at the start of each set.
        self._scan_cursors: dict[str, int] = {}
        self._kept: dict[str, int] = {}

    def start(self) -> None:
        self._thread.start()

    def use(self, config: Config) -> None:
        """Sweep by this config from the next sweep on."""
        self._config = config

    def close(self) -> None:
        """Stop the thread; one still waiting on a frozen Redis after CLOSE_WAIT_S is left
        behind, so that it never holds up resc's exit (each removal is one script)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(CLOSE_WAIT_S)
        if not self._thread.is_alive():
            self._redis.close()

    def _run(self) -> None:
        failing = False
        while not self._wait():
            found = targets(self._config)
            try:
                self.sweep(found)
            except StoreError as exc:
                with self.stats.lock:
                    self.stats.failed_sweeps += 1
                if not failing:
                    log.warning("dedup set expiry: sweep failed, retrying", error=str(exc))
                failing = True
                continue
            if failing:
                log.info("dedup set expiry: sweeping again")
            failing = False

    def _wait(self) -> bool:
        """Wait for the next sweep (which a reload may bring nearer); True when stopped."""
        start = time.monotonic()
        while True:
            found = targets(self._config)
            interval_s = sweep_interval_s(found) if found else SWEEP_MAX_S
            left_s = start + interval_s - time.monotonic()
            if found and left_s <= 0:
                return False
            if self._stop.wait(min(max(left_s, 0.0), 1.0) or 1.0):
                return True

    def _client(self) -> redis.Redis | RedisCluster:
        return self._redis.get(self._config.redis.url)

    def sweep(self, found: list[Target]) -> int:
        """One bounded pass over the targets; the members removed. StoreError when Redis
        cannot be read."""
        client = self._client()
        script = client.register_script(_SCRIPT)
        total = 0
        with converted_errors(f"expiring dedup set members at {redact_url(self._redis.url)}"):
            for target in found:
                now = time.time()
                for set_name, queue in self._sets(client, target):
                    skip = self._kept.pop(set_name, 0)
                    expired: list[bytes] = client.zrangebyscore(  # type: ignore[assignment]
                        set_name, "-inf", now - target.set_ttl_s, start=skip, num=MOST_MEMBERS
                    )
                    removed = [
                        m
                        for m in expired
                        if self._expire(client, script, set_name, queue, m, now - target.set_ttl_s)
                    ]
                    if len(expired) == MOST_MEMBERS:
                        self._kept[set_name] = skip + len(expired) - len(removed)
                    if removed:
                        total += len(removed)
                        with self.stats.lock:
                            self.stats.removed[target.set.source] += len(removed)
                        log.warning(
                            "dedup set members expired: older than set_ttl, in no queue and "
                            "no taken list",
                            set=set_name,
                            count=len(removed),
                            set_ttl_s=target.set_ttl_s,
                            first=removed[0],
                        )
        return total

    def _sets(self, client: redis.Redis | RedisCluster, target: Target) -> list[tuple[str, str]]:
        """(set, queue) for the target's sets that exist, at most MOST_SETS: the next ones
        of a SCAN that goes on where the previous sweep stopped."""
        if not target.set.refs:
            return [(target.set.source, target.queue.source)]
        glob = glob_of(target.set.source)
        found: list[tuple[str, str]] = []
        # A cluster is scanned one master after another, each with its own cursor.
        nodes: list[Any] = [None]
        if isinstance(client, RedisCluster):
            nodes = sorted(client.get_primaries(), key=lambda n: str(n.name))  # type: ignore[no-untyped-call, unused-ignore]
        for node in nodes:
            where = target.set.source if node is None else f"{target.set.source} @{node.name}"
            cursor = self._scan_cursors.pop(where, 0)
            while True:
                if node is None:
                    cursor, names = client.scan(cursor, match=glob, count=SCAN_COUNT, _type="zset")
                else:
                    # RedisCluster answers {node name: cursor}, names.
                    cursors: Any
                    cursors, names = client.scan(
                        cursor, match=glob, count=SCAN_COUNT, _type="zset", target_nodes=node
                    )
                    cursor = int(cursors[node.name])
                raw: bytes
                for raw in names:  # type: ignore[assignment]
                    name = raw.decode("utf-8", "backslashreplace")
                    variables = match_pattern(target.set, name)
                    if variables is not None:
                        encoded = {k: v.encode() for k, v in variables.items()}
                        queue = target.queue.expand(encoded).decode("utf-8", "backslashreplace")
                        found.append((name, queue))
                if cursor == 0:
                    break
                if len(found) >= MOST_SETS:
                    self._scan_cursors[where] = cursor
                    return found
        return found

    @staticmethod
    def _expire(
        client: redis.Redis | RedisCluster,
        script: redis.commands.core.Script,
        set_name: str,
        queue: str,
        member: bytes,
        highest_score: float,
    ) -> bool:
        # A worker that registers between the read of the ids and the script makes the
        # script refuse: read again, a few times.
        for _ in range(3):
            members: set[bytes] = client.smembers(queue_workers(queue))  # type: ignore[assignment]
            ids = sorted(m.decode("utf-8", "backslashreplace") for m in members)
            keys = [set_name, queue, queue_workers(queue)] + [
                worker_taken_list(queue, i) for i in ids
            ]
            answer = int(script(keys=keys, args=[member, repr(highest_score), *ids]))
            if answer >= 0:
                return answer == 1
        return False
