"""What several commands share."""

from __future__ import annotations

import sys

from resc.config import Config
from resc.config_load import load_config
from resc.errors import EXIT_USAGE, ConfigError


def load_config_or_exit(path: str) -> Config:
    """The config, or its problems on stderr and exit status 2."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"resc: {problem}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
