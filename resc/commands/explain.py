"""`resc explain CONF EVENT...`: what resc would do with events, without Redis."""

from __future__ import annotations

import argparse
import os
import sys

from resc.commands.common import load_config_or_exit
from resc.core.errors import EXIT_OK, EXIT_USAGE

NAME = "explain"
HELP = "show what resc would do with events: matching rules, variables, tasks (no Redis)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONF", help="config file (.hjson or .json)")
    parser.add_argument("events", metavar="EVENT", nargs="+", help="an event, as pushed")
    parser.add_argument(
        "--queue",
        metavar="Q",
        help="the input queue the events are pushed into (default: every watcher's)",
    )
    parser.add_argument(
        "--fetch",
        action="store_true",
        help="call the web services of fetch rules (by default only their URLs are shown)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON, for scripts")


def main(args: argparse.Namespace) -> int:
    import json

    from resc.fetch.client import Fetcher
    from resc.ops import explain

    config = load_config_or_exit(args.config)
    watchers = list(enumerate(config.watchers))
    if args.queue is not None:
        watchers = [(i, w) for i, w in watchers if w.input_queue == args.queue]
        if not watchers:
            queues = ", ".join(w.input_queue for w in config.watchers)
            print(
                f"resc: no watcher takes events from {args.queue!r}; input queues: {queues}",
                file=sys.stderr,
            )
            return EXIT_USAGE
    fetcher = Fetcher() if args.fetch else None
    explained = []
    try:
        for arg in args.events:
            # Arguments that are not UTF-8 reach Python as surrogate escapes: this gives
            # back the bytes as typed.
            event = os.fsencode(arg)
            traces = [explain.trace(i, w, event, fetcher) for i, w in watchers]
            explained.append((event, traces))
    finally:
        if fetcher is not None:
            fetcher.close()
    if args.json:
        print(json.dumps([explain.to_json(e, t) for e, t in explained], indent=2))
    else:
        print("\n\n".join("\n".join(explain.render_text(e, t)) for e, t in explained))
    return EXIT_OK
