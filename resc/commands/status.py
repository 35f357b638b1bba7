"""`resc status CONF`: what users wait on, once or live: the watchers' queues, the todo
queues with their sets, oldest tasks, workers and failed lists, and the tasks in hand."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from resc.commands.common import (
    load_config_or_exit,
    positive_float,
    positive_int,
    redis_url_or_none,
)
from resc.core.errors import EXIT_FATAL, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from rich.console import Group

    from resc.config.models import Config
    from resc.ops.status import InstanceSample, Key, Row, StatusReader, TodoRead
    from resc.ops.todo_status import TodoSample, WorkerSample

NAME = "status"
HELP = "show the config's queues, sets, workers and failed lists in Redis (read only)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONF", help="config file (.hjson or .json)")
    parser.add_argument(
        "--queue",
        metavar="PATTERN",
        action="append",
        default=[],
        help="also show the keys matching this glob (SCAN MATCH), e.g. 'trt/*/todo-queue': "
        "todo queues with their sets and workers, other keys by type; repeatable",
    )
    parser.add_argument(
        "--max-keys",
        type=positive_int,
        default=1000,
        metavar="N",
        help="at most N todo queues per glob (default: 1000)",
    )
    parser.add_argument(
        "--watch", action="store_true", help="refresh until Ctrl-C, with rates per second"
    )
    parser.add_argument(
        "--interval",
        type=positive_float,
        default=1.0,
        metavar="S",
        help="seconds between refreshes",
    )
    parser.add_argument(
        "--json", action="store_true", help="print JSON (with --watch, one line per refresh)"
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        help="the Redis to read instead of the config's redis.url (needed when that is "
        '"embedded": resc run prints the private server\'s URL when it starts)',
    )


COLUMNS = ("KEY", "ROLE", "LENGTH", "RATE/S", "NOTE")
TODO_COLUMNS = (
    "TODO QUEUE",
    "TASKS",
    "DELAYED",
    "SET",
    "OLDEST",
    "WORKERS",
    "HELD",
    "FAILED",
    "NOTE",
)
WORKER_COLUMNS = ("WORKER", "QUEUE", "HEARTBEAT", "HOLDS")
INSTANCE_COLUMNS = ("WATCHER", "INSTANCE", "HOST", "HEARTBEAT", "IN HAND")


@dataclass(frozen=True, slots=True)
class View:
    """One refresh: the watchers' rows, the todo queues, and, measured while watching,
    how long each worker has held its oldest task and since when its heartbeat was
    refreshed (at least)."""

    time: float
    rows: list[Row]
    todo: TodoRead
    held_for: dict[tuple[str, str], float]
    heartbeat_ages: dict[tuple[str, str], float]
    instances: list[InstanceSample]


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 120:
        return f"{int(seconds)} s"
    if seconds < 7200:
        return f"{int(seconds // 60)} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _cells(row: Row, watching: bool) -> list[str]:
    s = row.sample
    notes = []
    if s.wrong_type is not None:
        notes.append(f"holds a {s.type}, not a {s.wrong_type}")
    elif s.key.role == "scan" and s.type != "list":
        notes.append(f"a {s.type}")
    if s.reasons is not None:
        notes.append(f"reasons: {s.reasons}")
    if s.oldest is not None:
        notes.append(
            f"oldest here for >= {int(row.oldest_age_s)} s"
            if row.oldest_age_s is not None
            else "oldest: age n/a (--watch measures it)"
        )
    length = "-" if s.length is None or s.wrong_type is not None else str(s.length)
    rate = "" if row.rate_per_s is None else f"{row.rate_per_s:+.1f}"
    return [s.key.name, s.key.role, length, *([rate] if watching else []), "; ".join(notes)]


def _number(value: int | None) -> str:
    return "-" if value is None else str(value)


def _todo_cells(s: TodoSample, now: float) -> list[str]:
    if s.set is None:
        size, oldest = "", "n/a"
    else:
        size = _number(s.set_size)
        oldest = _age(s.oldest_age_s(now)) if s.oldest_score is not None else "-"
    notes = list(s.wrong_types)
    if s.next_due is not None:
        due_in = s.next_due - now
        notes.append(f"next due in {_age(due_in)}" if due_in > 0 else "next due now")
    if s.set_unknown:
        notes.append("set: its name cannot be made from the queue's")
    elif s.set is None:
        notes.append("no set: oldest unknown")
    else:
        notes.append(f"set {s.set}")
    alive = sum(1 for w in s.workers if w.alive)
    workers = f"{alive}" if alive == len(s.workers) else f"{alive} (+{len(s.workers) - alive} dead)"
    return [
        s.queue,
        _number(s.length),
        _number(s.delayed),
        size,
        oldest,
        workers,
        str(s.held),
        _number(s.failed),
        "; ".join(notes),
    ]


def _holds(queue: str, w: WorkerSample, held_for: dict[tuple[str, str], float]) -> str:
    if not w.tasks:
        return "-"
    first = w.tasks[0].decode("utf-8", "backslashreplace")
    age = held_for.get((queue, w.id))
    text = f"{first} (for >= {int(age)} s)" if age is not None else first
    return text + (f" +{w.held - 1} more" if w.held > 1 else "")


def _heartbeat(s: TodoSample, w: WorkerSample, view: View) -> str:
    if not w.alive:
        return "expired (dead)"
    if w.heartbeat_ttl_ms is None:
        return "alive (no TTL)"
    text = f"expires in {w.heartbeat_ttl_ms / 1000:.1f} s"
    age = view.heartbeat_ages.get((s.queue, w.id))
    return text if age is None else f"{text}, beat >= {age:.1f} s ago"


def _worker_cells(s: TodoSample, w: WorkerSample, view: View) -> list[str]:
    return [w.id, s.queue, _heartbeat(s, w, view), _holds(s.queue, w, view.held_for)]


def _instance_cells(i: InstanceSample) -> list[str]:
    if not i.alive:
        beat = "expired (dead: its events go back at the next sweep)"
    elif i.heartbeat_age_s is None:
        beat = "alive"
    else:
        beat = f"{i.heartbeat_age_s:.1f} s ago"
    host = i.host or "?"
    if i.pid is not None:
        host += f" (pid {i.pid})"
    hand = f"{i.in_hand}" + (f" ({i.wrong_type})" if i.wrong_type else "")
    return [i.watcher, i.id, host, beat, hand]


def _columns(table: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return [
        "  ".join(
            f"{cell:>{widths[i]}}" if i in right else f"{cell:<{widths[i]}}"
            for i, cell in enumerate(line)
        ).rstrip()
        for line in table
    ]


def _text(url: str, view: View, footer: list[str]) -> str:
    lines = [f"Redis {url}"]
    lines += _columns(
        [[c for i, c in enumerate(COLUMNS) if i != 3]] + [_cells(r, False) for r in view.rows], {2}
    )
    if view.instances:
        table = [list(INSTANCE_COLUMNS)] + [_instance_cells(i) for i in view.instances]
        lines += ["", *_columns(table, {4})]
    samples = view.todo.samples
    if samples:
        table = [list(TODO_COLUMNS)] + [_todo_cells(s, view.time) for s in samples]
        lines += ["", *_columns(table, {1, 2, 3, 4, 5, 6, 7})]
    workers = [(s, w) for s in samples for w in s.workers]
    if workers:
        table = [list(WORKER_COLUMNS)] + [_worker_cells(s, w, view) for s, w in workers]
        lines += ["", *_columns(table, set())]
    return "\n".join(lines + footer)


def _tables(url: str, view: View, footer: list[str], error: str | None) -> Group:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(f"resc status: Redis {url}  {time.strftime('%H:%M:%S')}"))
    for column in COLUMNS:
        table.add_column(column, justify="right" if column in ("LENGTH", "RATE/S") else "left")
    for row in view.rows:
        table.add_row(*(Text(cell) for cell in _cells(row, True)))
    caption = ([f"last refresh failed: {error}"] if error else []) + footer
    table.caption = Text("\n".join(caption)) if caption else None
    parts: list[Table] = [table]
    if view.instances:
        members = Table()
        for column in INSTANCE_COLUMNS:
            members.add_column(column, justify="right" if column == "IN HAND" else "left")
        for i in view.instances:
            members.add_row(*(Text(cell) for cell in _instance_cells(i)))
        parts.append(members)
    samples = view.todo.samples
    if samples:
        todo = Table()
        for column in TODO_COLUMNS:
            todo.add_column(column, justify="left" if column in ("TODO QUEUE", "NOTE") else "right")
        for s in samples:
            todo.add_row(*(Text(cell) for cell in _todo_cells(s, view.time)))
        parts.append(todo)
    workers = [(s, w) for s in samples for w in s.workers]
    if workers:
        held = Table()
        for column in WORKER_COLUMNS:
            held.add_column(column)
        for s, w in workers:
            held.add_row(*(Text(cell) for cell in _worker_cells(s, w, view)))
        parts.append(held)
    return Group(*parts)


def _footer(unlisted: list[str], truncated: list[str], most_keys: int) -> list[str]:
    from resc.config.todo import glob_of

    lines = [f"more than {most_keys} todo queues match {g}: {most_keys} shown" for g in truncated]
    if unlisted:
        options = " ".join(f"--queue '{glob_of(p)}'" for p in unlisted)
        lines += [
            f"not shown (names made from events): {', '.join(unlisted)}",
            f"to list them: {options} (or queue_glob in their make)",
        ]
    return lines


def _worker_json(s: TodoSample, w: WorkerSample, view: View) -> dict[str, Any]:
    ttl = w.heartbeat_ttl_ms
    return {
        "id": w.id,
        "alive": w.alive,
        "heartbeat_expires_in_s": ttl / 1000 if ttl is not None else None,
        "heartbeat_min_age_s": view.heartbeat_ages.get((s.queue, w.id)),
        "held": w.held,
        "tasks": [t.decode("utf-8", "backslashreplace") for t in w.tasks],
        "oldest_held_min_age_s": view.held_for.get((s.queue, w.id)),
    }


def _json(url: str, view: View, unlisted: list[str]) -> dict[str, Any]:
    return {
        "redis": url,
        "time": view.time,
        "keys": [
            {
                "key": r.sample.key.name,
                "role": r.sample.key.role,
                "type": r.sample.type,
                "length": r.sample.length,
                "rate_per_s": r.rate_per_s,
                "reasons": r.sample.reasons,
                "oldest_taken_min_age_s": r.oldest_age_s,
            }
            for r in view.rows
        ],
        "instances": [
            {
                "watcher": i.watcher,
                "id": i.id,
                "host": i.host,
                "pid": i.pid,
                "alive": i.alive,
                "heartbeat_age_s": i.heartbeat_age_s,
                "heartbeat_expires_in_s": i.heartbeat_expires_in_s,
                "in_hand": i.in_hand,
            }
            for i in view.instances
        ],
        "todo": [
            {
                "queue": s.queue,
                "pattern": s.pattern,
                "length": s.length,
                "set": s.set,
                "set_size": s.set_size,
                "oldest_task_age_s": s.oldest_age_s(view.time),
                "delayed": s.delayed,
                "next_due": s.next_due,
                "failed": s.failed,
                "workers": [_worker_json(s, w, view) for w in s.workers],
                "wrong_types": list(s.wrong_types),
            }
            for s in view.todo.samples
        ],
        "truncated_globs": view.todo.truncated,
        "not_shown": unlisted,
    }


Refresh = tuple[float, "View | None", str | None]  # time, the view or the Redis error


def _read(
    reader: StatusReader, config: Config, keys: list[Key], args: argparse.Namespace
) -> tuple[TodoRead, list[Any], list[InstanceSample]]:
    todo = reader.todo(config, args.queue, args.max_keys)
    return todo, reader.sample(keys, args.queue, shown=todo.names()), reader.instances(config)


def _refreshes(
    reader: StatusReader, config: Config, keys: list[Key], args: argparse.Namespace
) -> Iterator[Refresh]:
    from resc.core.errors import StoreError
    from resc.ops.status import Tracker

    tracker = Tracker()
    while True:
        now = time.time()
        view: View | None = None
        error = None
        try:
            todo, samples, members = _read(reader, config, keys, args)
            view = View(
                now,
                tracker.update(samples, now),
                todo,
                tracker.held_for(todo.samples, now),
                tracker.heartbeat_ages(todo.samples),
                members,
            )
        except StoreError as exc:
            error = str(exc)
        yield now, view, error
        time.sleep(args.interval)


def main(args: argparse.Namespace) -> int:
    from resc.core.errors import StoreError
    from resc.ops.status import Row, StatusReader, configured_keys
    from resc.ops.todo_status import unlisted_patterns

    config = load_config_or_exit(args.config)
    url = redis_url_or_none(config, args.redis)
    if url is None:
        return EXIT_USAGE
    keys = configured_keys(config)
    unlisted = unlisted_patterns(config, args.queue)
    try:
        reader = StatusReader(url)
    except StoreError as exc:
        print(f"resc: {exc}", file=sys.stderr)
        return EXIT_USAGE
    url = reader.display_url
    try:
        if not args.watch:
            now = time.time()
            todo, samples, members = _read(reader, config, keys, args)
            view = View(now, [Row(s, None, None) for s in samples], todo, {}, {}, members)
            if args.json:
                print(json.dumps(_json(url, view, unlisted), indent=2))
            else:
                print(_text(url, view, _footer(unlisted, todo.truncated, args.max_keys)))
            return EXIT_OK
        refreshes = _refreshes(reader, config, keys, args)
        first = next(refreshes)
        if first[2] is not None:
            raise StoreError(first[2])
        if args.json:
            for now, latest, error in itertools.chain([first], refreshes):
                data = (
                    _json(url, latest, unlisted)
                    if latest is not None
                    else {"redis": url, "time": now, "error": error}
                )
                print(json.dumps(data), flush=True)
        else:
            _live(url, itertools.chain([first], refreshes), unlisted, args.max_keys)
    except StoreError as exc:
        print(f"resc: {exc}", file=sys.stderr)
        return EXIT_FATAL
    except KeyboardInterrupt:
        pass
    finally:
        reader.close()
    return EXIT_OK


def _live(url: str, refreshes: Iterator[Refresh], unlisted: list[str], most_keys: int) -> None:
    from rich.live import Live

    shown: View | None = None
    with Live(auto_refresh=False) as live:
        for _, view, error in refreshes:
            # Through a Redis outage the last view stays, under the error.
            shown = view if view is not None else shown
            if shown is None:
                continue
            footer = _footer(unlisted, shown.todo.truncated, most_keys)
            live.update(_tables(url, shown, footer, error), refresh=True)
