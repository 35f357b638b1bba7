"""What each page shows, as JSON-ready data: read from Redis through resc.ops, from the
daemon's metrics (resc.core.metrics) and from the recent past (history). Texts of events
and tasks are handed on as strings, for the page to show as text."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.cluster import RedisCluster

from resc.config.models import Config
from resc.core.errors import StoreError
from resc.core.metrics import Histogram, Observed
from resc.dashboard.history import History, Point, rate_per_s
from resc.ops.status import StatusReader
from resc.ops.todo_status import TodoSample
from resc.server.claims import claims_key

# Rates are over this much of the recent past (or what there is of it).
RATE_WINDOW_S = 60.0
MOST_TODO_KEYS = 1000
MOST_TASKS_SHOWN = 20


def _text(value: bytes) -> str:
    return value.decode("utf-8", "backslashreplace")


def _recent(points: Sequence[Point], window_s: float) -> tuple[Point, Point] | None:
    if len(points) < 2:
        return None
    last = points[-1]
    first = next(p for p in points if last.time_s - p.time_s <= window_s)
    if first is last:
        first = points[-2]
    return first, last


def overview(
    config: Config,
    history: History,
    readiness: Callable[[], dict[str, str]],
    reader: StatusReader,
    in_daemon: bool,
) -> dict[str, Any]:
    points = history.snapshot()
    recent = _recent(points, RATE_WINDOW_S)
    watchers = []
    totals = {"taken": 0.0, "committed": 0.0}
    known_rates = False
    for w in config.watchers:
        name = w.input_queue
        last = points[-1].lengths.get(name, (None, None, None)) if points else (None,) * 3
        series = {
            kind: [p.lengths.get(name, (None, None, None))[i] for p in points]
            for i, kind in enumerate(("input", "taken", "failed"))
        }
        rates: dict[str, float | None] = {}
        if recent is not None:
            first, end = recent
            seconds = end.time_s - first.time_s
            for i, kind in enumerate(("input", "taken", "failed")):
                rates[kind] = rate_per_s(
                    first.lengths.get(name, (None,) * 3)[i],
                    end.lengths.get(name, (None,) * 3)[i],
                    seconds,
                )
            for i, kind in enumerate(("taken", "committed")):
                before, after = first.events.get(name), end.events.get(name)
                rate = rate_per_s(
                    before[i] if before else None, after[i] if after else None, seconds
                )
                rates[f"{kind}_events"] = rate
                if rate is not None:
                    totals[kind] += rate
                    known_rates = True
        counts = points[-1].events.get(name) if points else None
        watchers.append(
            {
                "name": name,
                "taken_queue": w.taken_queue,
                "failed_queue": w.failed_queue,
                "input": last[0],
                "taken": last[1],
                "failed": last[2],
                "series": series,
                "rates": rates,
                "events": None
                if counts is None
                else {"taken": counts[0], "committed": counts[1], "failed": counts[2]},
            }
        )
    not_ready = readiness()
    return {
        "in_daemon": in_daemon,
        "ready": not not_ready,
        "not_ready": not_ready,
        "redis_error": history.redis_error,
        "window_s": history.window_s,
        "times": [p.time_s for p in points],
        "watchers": watchers,
        "events_per_s": totals if known_rates else None,
        "fetch_error_rate": _fetch_error_rate(recent),
        "instances": _instances(config, reader, in_daemon),
    }


def _instances(config: Config, reader: StatusReader, in_daemon: bool) -> list[dict[str, Any]]:
    """Every registered resc instance of the config's watchers (resc.engine.instances),
    one row per id with the watchers it works for; [] when Redis cannot be read (the
    overview says so)."""
    try:
        samples = reader.instances(config)
    except StoreError:
        return []
    rows: dict[str, dict[str, Any]] = {}
    here = (socket.gethostname(), os.getpid())
    for s in samples:
        row = rows.setdefault(
            s.id,
            {
                "id": s.id,
                "host": s.host,
                "pid": s.pid,
                "alive": s.alive,
                "heartbeat_age_s": s.heartbeat_age_s,
                "in_hand": 0,
                "here": in_daemon and (s.host, s.pid) == here,
                "watchers": [],
                "wrong_types": [],
            },
        )
        row["alive"] = row["alive"] and s.alive
        row["in_hand"] += s.in_hand
        row["watchers"].append(s.watcher)
        if s.wrong_type is not None:
            row["wrong_types"].append(f"{s.watcher}: {s.wrong_type}")
    return list(rows.values())


def _fetch_error_rate(recent: tuple[Point, Point] | None) -> float | None:
    """Failed requests / requests over the recent past; None without requests."""
    if recent is None:
        return None
    first, last = recent
    requests = errors = 0
    for key, (total, failed) in last.fetches.items():
        before = first.fetches.get(key, (0, 0))
        requests += total - before[0]
        errors += failed - before[1]
    return errors / requests if requests > 0 else None


def quantile_s(histogram: Histogram, q: float) -> float | None:
    """The q-quantile of a histogram, interpolated in its bucket as Prometheus does."""
    buckets = histogram.buckets()
    total = buckets[-1][1]
    if total == 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == "+Inf":
                return lower
            upper = float(le)
            inside = count - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = (float(le) if le != "+Inf" else lower), count
    return lower


def rules(config: Config, observed: Observed, history: History, in_daemon: bool) -> dict[str, Any]:
    stats = dict(observed.watchers())
    points = history.snapshot()
    first = points[0] if points else None
    rows = []
    for w in config.watchers:
        counted = stats.get(w.input_queue)
        names = list(dict.fromkeys(rule.name for rule in w.rules))
        for name in names:
            row: dict[str, Any] = {
                "watcher": w.input_queue,
                "rule": name,
                "fetches": any(rule.fetch for rule in w.rules if rule.name == name),
            }
            if counted is not None:
                with counted.fetches_lock:
                    fetch = counted.fetches.get(name)
                outcomes: dict[str, int] = {}
                if fetch is not None:
                    with fetch.lock:
                        outcomes = dict(fetch.outcomes)
                matches = counted.matches.get(name, 0)
                before = first.rules.get((w.input_queue, name), (0, 0, 0)) if first else (0, 0, 0)
                row |= {
                    "matches": matches,
                    "pushed": counted.pushed.get(name, 0),
                    "deduplicated": counted.deduplicated.get(name, 0),
                    "fetch_failed": sum(v for k, v in outcomes.items() if k != "ok"),
                    "fetch_p50_s": quantile_s(fetch.seconds, 0.5) if fetch else None,
                    "fetch_p99_s": quantile_s(fetch.seconds, 0.99) if fetch else None,
                    "matches_in_window": matches - before[0],
                }
            rows.append(row)
    failed = {
        name: s.failed
        for name, s in stats.items()
        if name in {w.input_queue for w in config.watchers}
    }
    return {
        "in_daemon": in_daemon,
        "window_s": min(history.window_s, points[-1].time_s - points[0].time_s) if points else 0,
        "rules": rows,
        "events_failed": failed,
    }


def queues(
    config: Config, reader: StatusReader, client: redis.Redis | RedisCluster
) -> dict[str, Any]:
    read = reader.todo(config, [], MOST_TODO_KEYS)
    names = [s.queue for s in read.samples]
    claims = _claims(client, names)
    now = time.time()
    return {
        "queues": [_queue(s, claims.get(s.queue), now) for s in read.samples],
        "truncated": read.truncated,
    }


def _claims(client: redis.Redis | RedisCluster, queues: Sequence[str]) -> dict[str, int | None]:
    """Queue -> the HTTP API's claims on it (None: no claims hash). On a cluster, each
    key's commands go to its master (the pipeline is not atomic there, nor needs be)."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.type(claims_key(queue))
        pipe.hlen(claims_key(queue))
    replies = pipe.execute(raise_on_error=False)
    found: dict[str, int | None] = {}
    for i, queue in enumerate(queues):
        kind = replies[2 * i]
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        found[queue] = replies[2 * i + 1] if kind == "hash" else None
    return found


def _queue(s: TodoSample, claims: int | None, now: float) -> dict[str, Any]:
    return {
        "claims": claims,
        "queue": s.queue,
        "pattern": s.pattern,
        "length": s.length,
        "set": s.set,
        "set_size": s.set_size,
        "oldest_age_s": s.oldest_age_s(now),
        "failed": s.failed,
        "delayed": s.delayed,
        "next_due_in_s": None if s.next_due is None else s.next_due - now,
        "held": s.held,
        "wrong_types": list(s.wrong_types),
        "set_unknown": s.set_unknown,
        "workers": [
            {
                "id": w.id,
                "alive": w.alive,
                "heartbeat_ttl_s": None
                if w.heartbeat_ttl_ms is None
                else w.heartbeat_ttl_ms / 1000,
                "held": w.held,
                "tasks": [_text(t) for t in w.tasks[:MOST_TASKS_SHOWN]],
            }
            for w in s.workers
        ],
    }
