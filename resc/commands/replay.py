"""`resc replay CONF`: failed events back to their input queue, oldest first."""

from __future__ import annotations

import argparse
import sys

from resc.commands.common import load_config_or_exit, positive_int
from resc.core.errors import EXIT_FATAL, EXIT_OK, EXIT_USAGE, StoreError

NAME = "replay"
HELP = "move failed events back to their input queue (or list them with --dry-run)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONF", help="config file (.hjson or .json)")
    parser.add_argument("--watcher", metavar="QUEUE", help="only the watcher with this input queue")
    parser.add_argument(
        "--limit", type=positive_int, metavar="N", help="at most N events per watcher"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="list the failed events and their reasons"
    )


def _show(event: bytes) -> str:
    return event.decode("utf-8", "backslashreplace")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def main(args: argparse.Namespace) -> int:
    config = load_config_or_exit(args.config)
    watchers = config.watchers
    if args.watcher is not None:
        watchers = [w for w in watchers if w.input_queue == args.watcher]
        if not watchers:
            known = ", ".join(w.input_queue for w in config.watchers)
            print(f"resc: no watcher has input queue {args.watcher!r} ({known})", file=sys.stderr)
            return EXIT_USAGE
    from resc.engine.store import Store

    try:
        store = Store(config.redis.url)
    except StoreError as exc:
        print(f"resc: {exc}", file=sys.stderr)
        return EXIT_FATAL
    try:
        store.connect()
        for watcher in watchers:
            limit = args.limit if args.limit is not None else sys.maxsize
            if args.dry_run:
                total, listed = store.failed_events(watcher.failed_queue, min(limit, 2**31))
                shown = f" (the oldest {len(listed)} listed)" if len(listed) < total else ""
                print(f"{watcher.failed_queue}: {_count(total, 'failed event')}{shown}")
                for event, record in listed:
                    why = record.reason if record is not None else "(no reason recorded)"
                    print(f"  {_show(event)}  <- {why}")
                continue
            # Only the events there now: the daemon may fail them again while this runs,
            # and those are for a later replay.
            (present,) = store.lengths([watcher.failed_queue])
            moved = 0
            while moved < min(limit, present):
                if store.replay_one(watcher.failed_queue, watcher.input_queue) is None:
                    break
                moved += 1
            moved_back = _count(moved, "event")
            print(f"{watcher.failed_queue}: {moved_back} moved back to {watcher.input_queue}")
    except StoreError as exc:
        print(f"resc: {exc}", file=sys.stderr)
        return EXIT_FATAL
    finally:
        store.close()
    return EXIT_OK
