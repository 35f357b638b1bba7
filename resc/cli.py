"""The command line: `resc CONF` or `resc run CONF`. Exit status: 0 after a stop by
signal, 1 for a fatal runtime error, 2 for usage or config errors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from resc import __version__, logs
from resc.config import load_config
from resc.errors import ConfigError

EXIT_USAGE = 2
COMMANDS = ("run",)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resc",
        description="Turns events from Redis queues into deduplicated tasks, by regex rules.",
        epilog="`resc CONF` is short for `resc run CONF`. Logging: RESC_LOG=info "
        "(or RUST_LOG), RESC_LOG_FORMAT=json.",
    )
    parser.add_argument("--version", action="version", version=f"resc {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = commands.add_parser("run", help="run the daemon on a config file")
    run.add_argument("config", metavar="CONF", help="config file (.hjson or .json)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and not args_list[0].startswith("-") and args_list[0] not in COMMANDS:
        args_list.insert(0, "run")
    args = _parser().parse_args(args_list)
    logs.configure()
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"resc: {problem}", file=sys.stderr)
        return EXIT_USAGE
    from resc import daemon  # the daemon's imports are not needed for usage errors

    return daemon.run(config)
