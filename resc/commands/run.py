"""`resc run CONF` (or `resc CONF`): the daemon."""

from __future__ import annotations

import argparse

from resc.commands.common import load_config_or_exit

NAME = "run"
HELP = "run the daemon on a config file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONF", help="config file (.hjson or .json)")


def main(args: argparse.Namespace) -> int:
    config = load_config_or_exit(args.config)
    from resc import daemon

    return daemon.run(config)
