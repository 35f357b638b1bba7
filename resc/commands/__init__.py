"""The subcommands of `resc`: one module each, with NAME, HELP, add_arguments(parser)
and main(args) -> exit status. A module's heavy imports happen inside its main(). The top
layer: it may import every package of resc, and only resc.cli imports it."""

from __future__ import annotations

import argparse
from importlib import import_module
from typing import Protocol

# Module names under resc.commands, in the order `resc --help` lists them.
MODULES = (
    "run",
    "serve",
    "dashboard",
    "check",
    "explain",
    "test",
    "status",
    "schema",
    "failed",
    "replay",
    "work",
    "demo",
)


class Command(Protocol):
    NAME: str
    HELP: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def main(self, args: argparse.Namespace) -> int: ...


def load_all() -> list[Command]:
    return [import_module(f"resc.commands.{name}") for name in MODULES]
