"""`resc check CONF [--strict] [--cluster]`: what the daemon checks at start, and
warnings; for a Redis Cluster (a cluster URL in redis.url, or --cluster), the slot
errors and the notes about cross-slot results too."""

from __future__ import annotations

import argparse
from pathlib import Path

from resc.core.errors import EXIT_OK, EXIT_USAGE
from resc.core.words import counted

NAME = "check"
HELP = "check a config file: the daemon's checks, plus warnings about likely mistakes"

EXIT_WARNINGS = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONF", help="config file (.hjson or .json)")
    parser.add_argument(
        "--strict", action="store_true", help=f"exit with {EXIT_WARNINGS} when there are warnings"
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="check for a Redis Cluster (as a redis+cluster:// redis.url does): hash tags "
        "and slots",
    )


def main(args: argparse.Namespace) -> int:
    from resc.config.load import config_from_source
    from resc.config.redis_url import is_cluster_url
    from resc.config.source import read_source
    from resc.core.errors import ConfigError
    from resc.ops import lint

    path = Path(args.config)
    errors: list[str] = []
    hints: list[lint.Finding] = []
    warnings: list[lint.Finding] = []
    notes: list[lint.Finding] = []
    try:
        source = read_source(path)
    except ConfigError as exc:
        errors = exc.problems
        if path.suffix == ".hjson":
            hints = lint.syntax_hints(path)
    else:
        try:
            config = config_from_source(source)
        except ConfigError as exc:
            # The config is unusable, but a swallowed bracket often explains why.
            errors = exc.problems
            warnings = lint.hjson_pitfalls(source)
        else:
            warnings = lint.warnings(config, source)
            if args.cluster or is_cluster_url(config.redis.url):
                slots = lint.cluster_findings(config, source)
                errors = [finding.text for finding in slots.errors]
                notes = slots.notes
    for error in errors:
        print(f"error: {error}")
    for hint in hints:
        print(f"hint: {hint.text}")
    for warning in warnings:
        print(f"warning: {warning.text}")
    for note in notes:
        print(f"note: {note.text}")
    if errors:
        summary = counted(len(errors), "error") + (
            f", {counted(len(warnings), 'warning')}" if warnings else ""
        )
        print(f"{args.config}: {summary}")
        return EXIT_USAGE
    if not warnings:
        print(f"{args.config}: OK")
        return EXIT_OK
    if args.strict:
        print(f"{args.config}: {counted(len(warnings), 'warning')}, failing with --strict")
        return EXIT_WARNINGS
    print(f"{args.config}: OK, {counted(len(warnings), 'warning')}")
    return EXIT_OK
