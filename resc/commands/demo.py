"""`resc demo`: the whole system at work, with nothing to install or configure."""

from __future__ import annotations

import argparse
import sys

from resc.commands.common import positive_int
from resc.core.errors import EXIT_FATAL, EXIT_USAGE

NAME = "demo"
HELP = "see resc at work: a private Redis, the example config, two workers, live"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--events", type=positive_int, default=10, metavar="N", help="events to push (default: 10)"
    )


def main(args: argparse.Namespace) -> int:
    from resc.core.errors import RescError
    from resc.dev import demo
    from resc.dev.private_redis import INSTALL_HINT

    try:
        return demo.run(args.events)
    except RescError as exc:
        print(f"resc demo: {exc}", file=sys.stderr)
        return EXIT_USAGE if INSTALL_HINT in str(exc) else EXIT_FATAL
