"""The HTTP server (off unless asked for): an ASGI app (resc.server.app) on uvicorn, in a
thread beside the daemon. The socket is bound here, at once, so that a bad address is a
clear error before anything starts; uvicorn serves it from start() to close()."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Awaitable, Callable

import uvicorn
from starlette.types import ASGIApp

from resc.config.models import parse_listen
from resc.core.errors import RescError
from resc.core.logs import get_logger

log = get_logger("resc.http")

# The longest close() waits for requests in flight.
SHUTDOWN_S = 3.0


def bind(listen: str) -> socket.socket:
    """A listening TCP socket on `listen` (HOST:PORT); RescError when it cannot be bound."""
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP, and
    # without it a response written in two parts waits out the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise RescError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
    return sock


def address_of(sock: socket.socket) -> str:
    """HOST:PORT of a TCP socket, or the path of a Unix one."""
    name = sock.getsockname()
    return name if isinstance(name, str) else f"{name[0]}:{name[1]}"


class HttpListener:
    """Serves `app` on `listen` (HOST:PORT, or a socket already bound) from start()
    until close(); `on_close` runs in the server's event loop once it has stopped
    serving (to close what lives in that loop, such as asyncio Redis connections)."""

    def __init__(
        self,
        app: ASGIApp,
        listen: str | socket.socket,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._socket = bind(listen) if isinstance(listen, str) else listen
        self.address = address_of(self._socket)
        self.app = app
        self._on_close = on_close
        # uvloop and httptools when installed (they are dependencies), as "auto" picks.
        config = uvicorn.Config(
            app,
            log_config=None,  # resc's logging stays as resc.core.logs set it up
            log_level=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=int(SHUTDOWN_S),
        )
        self._server = uvicorn.Server(config)
        self._loop_factory = config.get_loop_factory()
        self._thread = threading.Thread(target=self._run, daemon=True, name="http server")

    def _run(self) -> None:
        with asyncio.Runner(loop_factory=self._loop_factory) as runner:
            runner.run(self._serve())

    async def _serve(self) -> None:
        try:
            await self._server.serve([self._socket])
        finally:
            if self._on_close is not None:
                try:
                    await self._on_close()
                except Exception as exc:  # closing must not hide how serving ended
                    log.warning("HTTP server: closing failed", error=str(exc))

    def start(self) -> None:
        self._thread.start()
        log.info("HTTP server started", address=self.address)

    def close(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(SHUTDOWN_S + 2)
        with contextlib.suppress(OSError):
            self._socket.close()
