"""The HTTP server (off unless asked for): an ASGI app (resc.server.app) on uvicorn, in a
thread beside the daemon. The socket is bound here, at once, so that a bad address is a
clear error before anything starts; uvicorn serves it from start() to close()."""

from __future__ import annotations

import contextlib
import socket
import threading

import uvicorn
from fastapi import FastAPI

from resc.config.models import parse_listen
from resc.core.errors import RescError
from resc.core.logs import get_logger

log = get_logger("resc.http")

# The longest close() waits for requests in flight.
SHUTDOWN_S = 3.0


class HttpListener:
    """Serves `app` on `listen` (HOST:PORT) from start() until close()."""

    def __init__(self, app: FastAPI, listen: str) -> None:
        host, port = parse_listen(listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP, and
        # without it a response written in two parts waits out the client's delayed ACK.
        self._socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind((host, port))
            self._socket.listen(128)
        except OSError as exc:
            self._socket.close()
            raise RescError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
        self.address = f"{host}:{self._socket.getsockname()[1]}"
        self.app = app
        config = uvicorn.Config(
            app,
            log_config=None,  # resc's logging stays as resc.core.logs set it up
            log_level=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=int(SHUTDOWN_S),
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, args=([self._socket],), daemon=True, name="http server"
        )

    def start(self) -> None:
        self._thread.start()
        log.info("HTTP server started", address=self.address)

    def close(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(SHUTDOWN_S + 2)
        with contextlib.suppress(OSError):
            self._socket.close()
