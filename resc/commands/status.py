"""`resc status CONF`: the lengths of the queues and sets a config names, once or live."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Iterator
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from resc.commands.common import load_config_or_exit, positive_float, redis_url_or_none
from resc.core.errors import EXIT_FATAL, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from rich.table import Table

    from resc.ops.status import Key, Row, StatusReader

NAME = "status"
HELP = "show the lengths of the config's queues and sets in Redis (read only)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONF", help="config file (.hjson or .json)")
    parser.add_argument(
        "--queue",
        metavar="PATTERN",
        action="append",
        default=[],
        help="also show the keys matching this glob (SCAN MATCH), e.g. 'trt/*/todo-queue'; "
        "repeatable",
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


def _footer(unlisted: list[str], globs: list[str]) -> list[str]:
    from resc.ops.status import glob_of

    hidden = [p for p in unlisted if not any(fnmatchcase(glob_of(p), g) for g in globs)]
    if not hidden:
        return []
    options = " ".join(f"--queue '{glob_of(p)}'" for p in hidden)
    return [f"not shown (names made from events): {', '.join(hidden)}", f"to list them: {options}"]


def _text(url: str, rows: list[Row], footer: list[str]) -> str:
    table = [[c for i, c in enumerate(COLUMNS) if i != 3]] + [_cells(r, False) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    lines = [f"Redis {url}"]
    for line in table:
        key, role, length, note = line
        lines.append(
            f"{key:<{widths[0]}}  {role:<{widths[1]}}  {length:>{widths[2]}}  {note}".rstrip()
        )
    return "\n".join(lines + footer)


def _table(url: str, rows: list[Row], footer: list[str], error: str | None) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(f"resc status: Redis {url}  {time.strftime('%H:%M:%S')}"))
    for column in COLUMNS:
        table.add_column(column, justify="right" if column in ("LENGTH", "RATE/S") else "left")
    for row in rows:
        table.add_row(*(Text(cell) for cell in _cells(row, True)))
    caption = ([f"last refresh failed: {error}"] if error else []) + footer
    table.caption = Text("\n".join(caption)) if caption else None
    return table


def _json(url: str, now: float, rows: list[Row], unlisted: list[str]) -> dict[str, Any]:
    return {
        "redis": url,
        "time": now,
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
            for r in rows
        ],
        "not_shown": unlisted,
    }


Refresh = tuple[float, "list[Row] | None", str | None]  # time, rows or the Redis error


def _refreshes(
    reader: StatusReader, keys: list[Key], globs: list[str], interval_s: float
) -> Iterator[Refresh]:
    from resc.core.errors import StoreError
    from resc.ops.status import Tracker

    tracker = Tracker()
    while True:
        now = time.time()
        rows: list[Row] | None = None
        error = None
        try:
            rows = tracker.update(reader.sample(keys, globs), now)
        except StoreError as exc:
            error = str(exc)
        yield now, rows, error
        time.sleep(interval_s)


def main(args: argparse.Namespace) -> int:
    from resc.core.errors import StoreError
    from resc.ops.status import Row, StatusReader, configured_keys

    config = load_config_or_exit(args.config)
    url = redis_url_or_none(config, args.redis)
    if url is None:
        return EXIT_USAGE
    keys, unlisted = configured_keys(config)
    try:
        reader = StatusReader(url)
    except StoreError as exc:
        print(f"resc: {exc}", file=sys.stderr)
        return EXIT_USAGE
    url = reader.display_url
    footer = _footer(unlisted, args.queue)
    try:
        if not args.watch:
            now = time.time()
            rows = [Row(s, None, None) for s in reader.sample(keys, args.queue)]
            if args.json:
                print(json.dumps(_json(url, now, rows, unlisted), indent=2))
            else:
                print(_text(url, rows, footer))
            return EXIT_OK
        refreshes = _refreshes(reader, keys, args.queue, args.interval)
        first = next(refreshes)
        if first[2] is not None:
            raise StoreError(first[2])
        if args.json:
            for now, latest, error in itertools.chain([first], refreshes):
                data = (
                    _json(url, now, latest, unlisted)
                    if latest is not None
                    else {"redis": url, "time": now, "error": error}
                )
                print(json.dumps(data), flush=True)
        else:
            _live(url, itertools.chain([first], refreshes), footer)
    except StoreError as exc:
        print(f"resc: {exc}", file=sys.stderr)
        return EXIT_FATAL
    except KeyboardInterrupt:
        pass
    finally:
        reader.close()
    return EXIT_OK


def _live(url: str, refreshes: Iterator[Refresh], footer: list[str]) -> None:
    from rich.live import Live

    shown: list[Row] = []
    with Live(auto_refresh=False) as live:
        for _, rows, error in refreshes:
            # Through a Redis outage the last rows stay, under the error.
            shown = rows if rows is not None else shown
            live.update(_table(url, shown, footer, error), refresh=True)
