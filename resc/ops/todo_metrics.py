"""Metric families for what users wait on, read from Redis when /metrics is scraped: the
todo queues of the daemon's running config (resc.ops.todo_status), what the dedup set
expiry removed (resc.engine.expiry), and the delayed tasks made due (resc.engine.scheduler).

Labels are bounded: `queue` is a make's queue pattern as the config writes it (the
queues one pattern names are summed, or their maximum taken), `set` a make's set
pattern; never a name made from an event, a task or a worker id. Queues named with
variables are read only when their make has a queue_glob, at most MOST_KEYS per glob.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisClusterException

from resc.config.models import Config
from resc.connection.clients import ClientOf
from resc.core.errors import StoreError
from resc.core.logs import get_logger
from resc.engine.expiry import ExpiryStats
from resc.engine.scheduler import SchedulerStats
from resc.ops.todo_status import TodoSample, find_todo_queues, read_todo_queues

log = get_logger("resc.http")

MOST_KEYS = 1000


class TodoCollector(Collector):
    """Reads the todo queues of `config()` (the daemon's config, which a reload
    replaces) at each scrape, over a connection of its own."""

    def __init__(
        self,
        config: Callable[[], Config],
        expiry: ExpiryStats,
        scheduler: SchedulerStats | None = None,
    ) -> None:
        self._config = config
        self._expiry = expiry
        self._scheduler = scheduler
        self._lock = threading.Lock()  # scrapes run in threads of their own
        # Made at the first scrape; a RedisCluster on a cluster.
        self._clients = ClientOf("resc-metrics", socket_timeout_s=5)

    def collect(self) -> Iterable[Metric]:
        yield from self._expiry_counters()
        yield from self._scheduler_counters()
        config = self._config()
        with self._lock:
            try:
                # No retry: a scrape that fails shows no todo samples, the next one tries
                # again.
                client = self._clients.get(config.redis.url)
                found = find_todo_queues(client, config, (), MOST_KEYS)
                samples = read_todo_queues(client, found)
            except (redis.RedisError, RedisClusterException, StoreError) as exc:
                log.debug("todo queues not read for the metrics", error=str(exc))
                samples = []
        yield from _families(samples)

    def _expiry_counters(self) -> Iterator[Metric]:
        removed = CounterMetricFamily(
            "resc_set_members_expired",
            "dedup set members removed by set_ttl: older than it, in no queue, not taken",
            labels=["set"],
        )
        failed = CounterMetricFamily(
            "resc_set_expiry_failed_sweeps", "set_ttl sweeps that could not read Redis"
        )
        with self._expiry.lock:
            counts = dict(self._expiry.removed)
            failed_sweeps = self._expiry.failed_sweeps
        for pattern, count in counts.items():
            removed.add_metric([pattern], count)
        failed.add_metric([], failed_sweeps)
        yield removed
        yield failed

    def _scheduler_counters(self) -> Iterator[Metric]:
        if self._scheduler is None:
            return
        pushed = CounterMetricFamily(
            "resc_delayed_tasks_due", "delayed tasks pushed into their queue when due"
        )
        failed = CounterMetricFamily(
            "resc_delayed_failed_passes", "passes over the delayed tasks that Redis failed"
        )
        with self._scheduler.lock:
            pushed.add_metric([], self._scheduler.pushed)
            failed.add_metric([], self._scheduler.failed_passes)
        yield pushed
        yield failed


def _gauge(name: str, doc: str, labels: tuple[str, ...] = ("queue",)) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _families(samples: list[TodoSample]) -> Iterator[Metric]:
    now = time.time()
    queues = _gauge("resc_todo_queues", "todo queues found for a make's queue pattern")
    tasks = _gauge("resc_todo_tasks", "tasks waiting in the todo queues of a pattern")
    members = _gauge("resc_todo_set_members", "members of the dedup sets of a pattern's queues")
    oldest = _gauge(
        "resc_todo_oldest_task_age_seconds",
        "age of the oldest task a dedup set holds (its lowest score); absent without a set",
    )
    failed = _gauge("resc_todo_failed", "tasks in the failed lists of a pattern's queues")
    delayed = _gauge("resc_todo_delayed", "tasks of a pattern's queues not due yet (delay, at)")
    next_due = _gauge(
        "resc_todo_next_due_seconds",
        "how long until the first delayed task of a pattern's queues is due (negative: late)",
    )
    workers = _gauge(
        "resc_todo_workers",
        "workers registered on a pattern's queues, alive (heartbeat) or dead",
        ("queue", "state"),
    )
    held = _gauge("resc_todo_tasks_held", "tasks in the workers' taken lists")
    heartbeat = _gauge(
        "resc_todo_heartbeat_expiry_min_seconds",
        "the shortest time an alive worker's heartbeat has left before it counts as dead",
    )
    by_pattern: dict[str, list[TodoSample]] = {}
    for s in samples:
        by_pattern.setdefault(s.pattern, []).append(s)
    for pattern, group in by_pattern.items():
        label = [pattern]
        queues.add_metric(label, len(group))
        tasks.add_metric(label, sum(s.length or 0 for s in group))
        failed.add_metric(label, sum(s.failed or 0 for s in group))
        delayed.add_metric(label, sum(s.delayed or 0 for s in group))
        dues = [s.next_due for s in group if s.next_due is not None]
        if dues:
            next_due.add_metric(label, min(dues) - now)
        held.add_metric(label, sum(s.held for s in group))
        alive = [w for s in group for w in s.workers if w.alive]
        workers.add_metric([pattern, "alive"], len(alive))
        workers.add_metric([pattern, "dead"], sum(len(s.workers) for s in group) - len(alive))
        if any(s.set is not None for s in group):
            members.add_metric(label, sum(s.set_size or 0 for s in group))
        ages = [a for s in group if (a := s.oldest_age_s(now)) is not None]
        if ages:
            oldest.add_metric(label, max(ages))
        left = [w.heartbeat_ttl_ms for w in alive if w.heartbeat_ttl_ms is not None]
        if left:
            heartbeat.add_metric(label, min(left) / 1000)
    yield from (queues, tasks, members, oldest, failed, delayed, next_due, workers, held, heartbeat)
