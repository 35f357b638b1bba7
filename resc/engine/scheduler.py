"""Delayed tasks made due: the daemon's thread that pushes the tasks of a make's `delay`
or `at` into their todo queue when their time comes.

The commit (lua/commit.lua) puts a task that is not due yet into its queue's sorted set
of delayed tasks (resc.core.keys.delayed_tasks) and names the queue in the watcher's set
of queues with delayed tasks. This thread reads those sets and runs lua/schedule.lua on
each queue, which pushes the due tasks in one atomic step, at most BATCH per call: every
resc instance may run it on the same queues, and each task is pushed exactly once.

It sleeps until the next task is due, at most MAX_SLEEP_S, so that tasks committed by
another instance are pushed at most that late; a watcher of this instance that commits
a delayed task wakes it (wake()).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

import redis
from redis.cluster import RedisCluster

from resc.config.models import Config
from resc.connection import clients
from resc.connection.edge import converted_errors, reconnect_delay_s, redact_url
from resc.core.errors import StoreError
from resc.core.keys import delayed_counter, delayed_queues, delayed_tasks
from resc.core.logs import get_logger

log = get_logger("resc.scheduler")

_SCRIPT = (files("resc.engine") / "lua" / "schedule.lua").read_text("utf-8")
# Tasks pushed per script call: a long due backlog is pushed in steps, between which
# Redis serves others.
BATCH = 1000
MAX_SLEEP_S = 1.0
CLOSE_WAIT_S = 0.5


@dataclass
class SchedulerStats:
    """What the scheduler did, for the metrics."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    pushed: int = 0  # delayed tasks pushed into their queue when due
    failed_passes: int = 0  # passes that Redis failed


class Scheduler:
    """The scheduling thread. start(), use(config) after a reload, wake(due), close()."""

    def __init__(self, config: Config, stats: SchedulerStats) -> None:
        self.stats = stats
        self._config = config
        self._stop = threading.Event()
        self._woken = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delayed tasks", daemon=True)
        self._redis = clients.ClientOf("resc-scheduler")
        self._registries: dict[str, None] = {}  # the sets of queues to read, in order
        self._broken: set[bytes] = set()  # queues whose keys hold a wrong type

    def start(self) -> None:
        self._thread.start()

    def use(self, config: Config) -> None:
        """Read the watchers of this config from the next pass on."""
        self._config = config
        self._woken.set()

    def wake(self) -> None:
        """A delayed task was committed: look again now, it may be due before the next
        one known."""
        self._woken.set()

    def close(self) -> None:
        """Stop the thread. A thread still waiting on Redis after CLOSE_WAIT_S (a frozen
        server) is left behind, so that it never holds up resc's exit: what it does is
        one atomic script at a time, and its next pass would redo what it left."""
        self._stop.set()
        self._woken.set()
        if self._thread.is_alive():
            self._thread.join(CLOSE_WAIT_S)
        if not self._thread.is_alive():
            self._redis.close()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._woken.clear()
            try:
                next_due = self.push_due()
            except StoreError as exc:
                with self.stats.lock:
                    self.stats.failed_passes += 1
                if failures == 0:
                    log.warning("delayed tasks: Redis failed, retrying", error=str(exc))
                failures += 1
                self._woken.wait(reconnect_delay_s(failures))
                continue
            if failures:
                log.info("delayed tasks: Redis answers again")
            failures = 0
            sleep_s = MAX_SLEEP_S if next_due is None else next_due - time.time()
            self._woken.wait(min(max(sleep_s, 0.0), MAX_SLEEP_S))

    def _client(self) -> redis.Redis | RedisCluster:
        return self._redis.get(self._config.redis.url)

    def push_due(self) -> float | None:
        """One pass: push every task due by now. Returns when the next delayed task is
        due (unix seconds), None when none is known. StoreError when Redis fails."""
        client = self._client()
        script = client.register_script(_SCRIPT)
        next_due: float | None = None
        pushed = 0
        # The watchers a reload removed keep their registries read until they are empty.
        for watcher in self._config.watchers:
            self._registries[delayed_queues(watcher.input_queue)] = None
        with converted_errors(f"pushing due delayed tasks at {redact_url(self._redis.url)}"):
            for registry in list(self._registries):
                members: set[bytes] = client.smembers(registry)  # type: ignore[assignment]
                if not members and not self._listed(registry):
                    del self._registries[registry]
                for member in sorted(members):
                    due, count = self._push_queue(client, script, registry, member)
                    pushed += count
                    if due is not None and (next_due is None or due < next_due):
                        next_due = due
        if pushed:
            with self.stats.lock:
                self.stats.pushed += pushed
            log.debug("delayed tasks due: pushed", count=pushed)
        return next_due

    def _listed(self, registry: str) -> bool:
        return any(delayed_queues(w.input_queue) == registry for w in self._config.watchers)

    def _push_queue(
        self, client: redis.Redis | RedisCluster, script: Any, registry: str, member: bytes
    ) -> tuple[float | None, int]:
        """Push the due tasks of one queue: (when its next task is due, tasks pushed).
        A key of the wrong type is logged (once, until it is right again) and skipped."""
        queue = member.decode("utf-8", "surrogateescape")
        keys = [
            delayed_tasks(queue).encode("utf-8", "surrogateescape"),
            member,
            registry,
            delayed_counter(queue).encode("utf-8", "surrogateescape"),
        ]
        pushed = 0
        while True:
            try:
                count, next_ms = script(keys=keys, args=[int(time.time() * 1000), BATCH, member])
            except redis.ResponseError as exc:
                if member not in self._broken:
                    self._broken.add(member)
                    log.error(
                        "delayed tasks of a queue not pushed: a key holds the wrong type",
                        queue=queue,
                        error=str(exc).removeprefix("WRONGTYPE "),
                    )
                return None, pushed
            self._broken.discard(member)
            pushed += int(count)
            if int(count) < BATCH:
                return (None if int(next_ms) < 0 else int(next_ms) / 1000), pushed
