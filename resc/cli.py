"""The command line: `resc COMMAND ...`, and `resc CONF` as short for `resc run CONF` (a
first word that is neither a command nor a path is an unknown command, named with the
nearest one).

Exit status: 0 for success (and after a stop by signal), 1 for a fatal runtime error,
2 for usage or config errors."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path

from resc import __version__
from resc.commands import load_all
from resc.core import logs
from resc.core.errors import EXIT_OK

COMMANDS = load_all()
_OWN_OPTIONS = ("-h", "--help", "--version")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resc",
        description="Turns events from Redis queues into deduplicated tasks, by regex rules.",
        epilog="`resc CONF` is short for `resc run CONF`. Logging: RESC_LOG=info "
        "(or RUST_LOG), RESC_LOG_FORMAT=json.",
    )
    parser.add_argument("--version", action="version", version=f"resc {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        sub = subparsers.add_parser(command.NAME, help=command.HELP, description=command.HELP)
        command.add_arguments(sub)
        sub.set_defaults(main=command.main)
    return parser


def _is_config(word: str) -> bool:
    """Whether a first word that is not a command names a config file: `resc CONF`. A
    command name has no dot or slash, so a word with one is a path (missing or not, it
    is then reported as a file that cannot be read)."""
    return "." in word or "/" in word or Path(word).exists()


def _unknown_command(word: str, names: list[str]) -> str:
    nearest = difflib.get_close_matches(word, names, n=1)
    hint = f"did you mean {nearest[0]!r}?" if nearest else f"commands: {', '.join(names)}"
    return f"unknown command {word!r} ({hint})"


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    names = [command.NAME for command in COMMANDS]
    # `resc CONF` and `resc --embedded-redis CONF` mean `resc run ...`.
    if args_list and args_list[0] not in names and args_list[0] not in _OWN_OPTIONS:
        first = args_list[0]
        if not first.startswith("-") and not _is_config(first):
            parser.error(_unknown_command(first, names))
        args_list.insert(0, "run")
    args = parser.parse_args(args_list)
    logs.configure()
    try:
        status: int = args.main(args)
    except BrokenPipeError:
        # The reader went away (`resc schema | head`): nothing more to say to it.
        sys.stderr.close()
        return EXIT_OK
    return status
