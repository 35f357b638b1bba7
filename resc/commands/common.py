"""What several commands share."""

from __future__ import annotations

import argparse
import sys

from resc.config.load import load_config
from resc.config.models import Config
from resc.core.errors import EXIT_USAGE, ConfigError


def load_config_or_exit(path: str) -> Config:
    """The config, or its problems on stderr and exit status 2."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"resc: {problem}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number more than 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def redis_url_or_none(config: Config, option: str | None) -> str | None:
    """The Redis URL to use: `option` (--redis) or the config's; None after saying
    on stderr why there is none."""
    from pydantic import ValidationError

    from resc.config.models import EMBEDDED_REDIS, RedisConfig

    if option is None:
        if config.redis.url != EMBEDDED_REDIS:
            return config.redis.url
        print(
            f"resc: the config's redis.url is {EMBEDDED_REDIS!r}, a private server that "
            f"resc run starts on a free port and names when it starts: give that URL "
            f"with --redis",
            file=sys.stderr,
        )
        return None
    try:
        RedisConfig(url=option)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        print(f"resc: --redis: {reason}", file=sys.stderr)
        return None
    return option
