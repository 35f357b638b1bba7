"""Numbers about a running resc, counted cheaply in the hot path and exposed in the
Prometheus text format.

Watchers count into plain Python objects once per batch (no prometheus-client call per
event, which would cost more than matching the event); a custom collector turns them
into metric families when /metrics is scraped. Labels are bounded: watcher input queues,
rule names and fetch outcomes, never events or tasks.

Counters count from the start of the process: a watcher restarted by a reload goes on
from its predecessor's counts (WatcherStats.continued), and the counts of a rule or a
watcher that a reload removed stay exported, unchanged.
"""

from __future__ import annotations

import bisect
import copy
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from resc import __version__

LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 10_000)


class Histogram:
    """Bucket counts that can take many equal observations at once."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self.sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float, times: int = 1) -> None:
        index = bisect.bisect_left(self.bounds, value)
        with self._lock:
            self.counts[index] += times
            self.sum += value * times

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative (le, count) pairs, as Prometheus wants them."""
        with self._lock:
            counts = list(self.counts)
        out: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
            total += count
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
        return out

    def copy(self) -> Histogram:
        twin = Histogram(self.bounds)
        with self._lock:
            twin.counts, twin.sum = list(self.counts), self.sum
        return twin


@dataclass
class FetchStats:
    """Requests of one fetch (one rule's fetch entry), by outcome, and their latency."""

    outcomes: Counter[str] = field(default_factory=Counter)
    seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, outcome: str, seconds: float | None) -> None:
        """One request's outcome; seconds None for one never sent (circuit open)."""
        with self.lock:
            self.outcomes[outcome] += 1
        if seconds is not None:
            self.seconds.observe(seconds)


@dataclass
class WatcherStats:
    """What one watcher did. Written by its own thread only (and by the threads of its
    fetches for FetchStats, which lock)."""

    taken: int = 0
    committed: int = 0
    failed: int = 0
    reconnects: int = 0
    pushed: Counter[str] = field(default_factory=Counter)  # rule -> tasks pushed
    deduplicated: Counter[str] = field(default_factory=Counter)  # rule -> already in set
    delayed: Counter[str] = field(default_factory=Counter)  # rule -> pushed with a delay
    matches: Counter[str] = field(default_factory=Counter)  # rule -> events matched
    batch_sizes: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))
    event_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    # rule -> requests of its fetches (written by fetch threads: created under the lock)
    fetches: dict[str, FetchStats] = field(default_factory=dict)
    fetches_lock: threading.Lock = field(default_factory=threading.Lock)
    # Readiness: connected to Redis and taking events; else why not.
    ready: bool = False
    not_ready_because: str = "starting"
    running: bool = True  # False once a reload removed the watcher: no readiness then

    def fetch_stats(self, rule: str) -> FetchStats:
        """The counts of the fetches of `rule`, created at its first request."""
        with self.fetches_lock:
            stats = self.fetches.get(rule)
            if stats is None:
                stats = self.fetches[rule] = FetchStats()
            return stats

    def continued(self) -> WatcherStats:
        """The stats of a watcher that takes over from this one (a reload restarted it):
        its counts go on from these; its readiness starts afresh. The fetch counts are
        shared, since the old watcher may still be finishing a fetch."""
        with self.fetches_lock:
            fetches = dict(self.fetches)
        return WatcherStats(
            taken=self.taken,
            committed=self.committed,
            failed=self.failed,
            reconnects=self.reconnects,
            pushed=copy.copy(self.pushed),
            deduplicated=copy.copy(self.deduplicated),
            delayed=copy.copy(self.delayed),
            matches=copy.copy(self.matches),
            batch_sizes=self.batch_sizes.copy(),
            event_seconds=self.event_seconds.copy(),
            fetches=fetches,
        )


def _counter(name: str, doc: str, labels: Sequence[str]) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=labels)


class Observed(Protocol):
    """What the metrics read from the daemon."""

    def watchers(self) -> list[tuple[str, WatcherStats]]:
        """Every watcher run since resc started, the ones a reload removed included."""
        ...

    def queue_lengths(self) -> list[tuple[str, str, int]]:
        """(watcher, "input" | "taken" | "failed", length), read now; [] without Redis."""
        ...

    def instances(self) -> list[tuple[str, str, str]]:
        """(watcher, its instance id, host) of each running watcher."""
        ...


class RescCollector(Collector):
    """Metric families for every running watcher of a daemon, at scrape time."""

    def __init__(self, daemon: Observed) -> None:
        self._daemon = daemon

    def collect(self) -> Iterable[Metric]:
        info = InfoMetricFamily("resc_build", "resc's version")
        info.add_metric([], {"version": __version__})
        yield info
        # Prometheus sets `instance` itself, from the scraped target: the id resc gives
        # itself goes in a label of its own, on an info metric to join on.
        instances = InfoMetricFamily(
            "resc_instance",
            "the instance id of each running watcher (its taken list is <taken_queue>/<id>)",
            labels=["watcher"],
        )
        for watcher, instance, host in self._daemon.instances():
            instances.add_metric([watcher], {"id": instance, "host": host})
        yield instances
        watchers = self._daemon.watchers()
        yield from self._counts(watchers)
        yield from self._histograms(watchers)
        yield from self._fetches(watchers)
        yield from self._queues(watchers)

    @staticmethod
    def _counts(watchers: Sequence[tuple[str, WatcherStats]]) -> Iterator[Metric]:
        taken = _counter("resc_events_taken", "events taken from the input queue", ["watcher"])
        committed = _counter(
            "resc_events_committed", "events committed with their tasks", ["watcher"]
        )
        failed = _counter("resc_events_failed", "events moved to the failed queue", ["watcher"])
        reconnects = _counter(
            "resc_redis_reconnects", "connections to Redis made again after a loss", ["watcher"]
        )
        ready = GaugeMetricFamily(
            "resc_watcher_ready",
            "1 when the watcher is connected and taking events",
            labels=["watcher"],
        )
        pushed = _counter("resc_tasks_pushed", "tasks pushed to a todo queue", ["watcher", "rule"])
        dedup = _counter(
            "resc_tasks_deduplicated", "tasks not pushed: already in their set", ["watcher", "rule"]
        )
        delayed = _counter(
            "resc_tasks_delayed",
            "tasks pushed with a delay or an at, into their queue's delayed tasks (also "
            "counted in resc_tasks_pushed)",
            ["watcher", "rule"],
        )
        matches = _counter("resc_rule_matches", "events a rule matched", ["watcher", "rule"])
        for name, stats in watchers:
            taken.add_metric([name], stats.taken)
            committed.add_metric([name], stats.committed)
            failed.add_metric([name], stats.failed)
            reconnects.add_metric([name], stats.reconnects)
            if stats.running:
                ready.add_metric([name], 1.0 if stats.ready else 0.0)
            for rule, count in list(stats.pushed.items()):
                pushed.add_metric([name, rule], count)
            for rule, count in list(stats.deduplicated.items()):
                dedup.add_metric([name, rule], count)
            for rule, count in list(stats.delayed.items()):
                delayed.add_metric([name, rule], count)
            for rule, count in list(stats.matches.items()):
                matches.add_metric([name, rule], count)
        yield from (taken, committed, failed, reconnects, ready, pushed, dedup, delayed, matches)

    @staticmethod
    def _histograms(watchers: Sequence[tuple[str, WatcherStats]]) -> Iterator[Metric]:
        sizes = HistogramMetricFamily(
            "resc_batch_size", "events taken per batch", labels=["watcher"]
        )
        seconds = HistogramMetricFamily(
            "resc_event_seconds",
            "time from taking an event to the reply of its commit",
            labels=["watcher"],
            unit="",
        )
        for name, stats in watchers:
            sizes.add_metric([name], stats.batch_sizes.buckets(), stats.batch_sizes.sum)
            seconds.add_metric([name], stats.event_seconds.buckets(), stats.event_seconds.sum)
        yield sizes
        yield seconds

    def _fetches(self, watchers: Sequence[tuple[str, WatcherStats]]) -> Iterator[Metric]:
        requests = _counter(
            "resc_fetch_requests",
            "requests to web services, by outcome",
            ["watcher", "rule", "outcome"],
        )
        seconds = HistogramMetricFamily(
            "resc_fetch_seconds", "time of one request to a web service", labels=["watcher", "rule"]
        )
        for name, watcher in watchers:
            with watcher.fetches_lock:
                fetches = list(watcher.fetches.items())
            for rule, stats in fetches:
                with stats.lock:
                    outcomes = dict(stats.outcomes)
                for outcome, count in outcomes.items():
                    requests.add_metric([name, rule, outcome], count)
                seconds.add_metric([name, rule], stats.seconds.buckets(), stats.seconds.sum)
        yield requests
        yield seconds

    def _queues(self, watchers: Sequence[tuple[str, WatcherStats]]) -> Iterator[Metric]:
        lengths = GaugeMetricFamily(
            "resc_queue_length",
            "events waiting in a watcher's queues, read when scraped",
            labels=["watcher", "queue"],
        )
        for name, kind, length in self._daemon.queue_lengths():
            lengths.add_metric([name, kind], length)
        yield lengths


def registry_for(daemon: Observed) -> CollectorRegistry:
    """A registry of its own (not prometheus-client's global one) holding resc's metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RescCollector(daemon))
    return registry
