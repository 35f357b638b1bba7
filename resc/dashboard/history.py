"""The recent past, for sparklines and rates: every few seconds, the lengths of each
watcher's queues (read from Redis) and the daemon's counters (from its metrics), kept
for a window of some minutes in memory. A dashboard without watchers has no counters:
its rates are those of the queue lengths only."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from resc.config.models import Config
from resc.core.errors import StoreError
from resc.core.logs import get_logger
from resc.core.metrics import Observed
from resc.ops.status import StatusReader, configured_keys

log = get_logger("resc.dashboard")

FETCH_ERRORS = ("failed", "retryable_error", "not_sent", "circuit_open")


@dataclass(frozen=True, slots=True)
class Point:
    """One sample. Lengths: watcher -> (input, taken, failed), None when unread."""

    time_s: float
    lengths: dict[str, tuple[int | None, int | None, int | None]]
    events: dict[str, tuple[int, int, int]]  # watcher -> taken, committed, failed
    rules: dict[tuple[str, str], tuple[int, int, int]]  # matches, pushed, deduplicated
    fetches: dict[tuple[str, str], tuple[int, int]]  # requests, errors


@dataclass
class History:
    """Samples taken every interval_s, the last window_s of them kept."""

    config: Callable[[], Config]
    observed: Observed
    reader: StatusReader
    interval_s: float = 2.0
    window_s: float = 300.0
    points: deque[Point] = field(default_factory=deque)
    redis_error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="dashboard history")
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval_s):
                return

    def sample(self) -> Point:
        """Take one sample now, keep it, and return it."""
        point = Point(time.time(), self._lengths(), *_counters(self.observed))
        with self._lock:
            self.points.append(point)
            while self.points and point.time_s - self.points[0].time_s > self.window_s:
                self.points.popleft()
        return point

    def snapshot(self) -> list[Point]:
        with self._lock:
            return list(self.points)

    def _lengths(self) -> dict[str, tuple[int | None, int | None, int | None]]:
        config = self.config()
        try:
            samples = self.reader.sample(configured_keys(config), [])
        except StoreError as exc:
            if self.redis_error is None:
                log.warning("dashboard: Redis unavailable", error=str(exc))
            self.redis_error = str(exc)
            return {}
        self.redis_error = None
        length = {s.key.name: s.length for s in samples}
        return {
            w.input_queue: (
                length.get(w.input_queue),
                length.get(w.taken_queue),
                length.get(w.failed_queue),
            )
            for w in config.watchers
        }


def _counters(
    observed: Observed,
) -> tuple[
    dict[str, tuple[int, int, int]],
    dict[tuple[str, str], tuple[int, int, int]],
    dict[tuple[str, str], tuple[int, int]],
]:
    events, rules, fetches = {}, {}, {}
    for name, stats in observed.watchers():
        events[name] = (stats.taken, stats.committed, stats.failed)
        for rule in set(stats.matches) | set(stats.pushed) | set(stats.deduplicated):
            rules[(name, rule)] = (
                stats.matches.get(rule, 0),
                stats.pushed.get(rule, 0),
                stats.deduplicated.get(rule, 0),
            )
        with stats.fetches_lock:
            found = list(stats.fetches.items())
        for rule, fetch in found:
            with fetch.lock:
                outcomes = dict(fetch.outcomes)
            errors = sum(outcomes.get(o, 0) for o in FETCH_ERRORS)
            fetches[(name, rule)] = (sum(outcomes.values()), errors)
    return events, rules, fetches


def rate_per_s(before: float | None, after: float | None, seconds: float) -> float | None:
    """The change per second between two figures; None when unknown."""
    if before is None or after is None or seconds <= 0:
        return None
    return (after - before) / seconds
