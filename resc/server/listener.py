"""The HTTP listener (off unless asked for): /metrics in the Prometheus text format,
/livez (200 while the process runs) and /readyz (200 when every watcher has its Redis
connection and is taking events, else 503 with a JSON body saying why)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Sequence
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from resc.config.models import parse_listen
from resc.core.errors import RescError
from resc.core.logs import get_logger
from resc.core.metrics import Observed, registry_for

log = get_logger("resc.http")

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class HttpListener:
    def __init__(
        self,
        daemon: Observed,
        readiness: Callable[[], dict[str, str]],
        listen: str,
        collectors: Sequence[Collector] = (),
    ) -> None:
        """`collectors`: more metric families, beside the daemon's."""
        self._registry = registry_for(daemon)
        for collector in collectors:
            self._registry.register(collector)
        self._readiness = readiness
        host, port = parse_listen(listen)
        try:
            self._server = make_server(host, port, self._app, _Server, _QuietHandler)
        except OSError as exc:
            raise RescError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
        self.address = f"{host}:{self._server.server_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, daemon=True, name="http listener"
        )

    def start(self) -> None:
        self._thread.start()
        log.info("HTTP listener started", address=self.address, paths="/metrics /livez /readyz")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._answer(
                start_response, "200 OK", CONTENT_TYPE_LATEST, generate_latest(self._registry)
            )
        if path == "/livez":
            return self._answer(start_response, "200 OK", "text/plain", b"ok\n")
        if path == "/readyz":
            not_ready = self._readiness()
            body = json.dumps({"ready": not not_ready, "not_ready": not_ready}).encode()
            status = "503 Service Unavailable" if not_ready else "200 OK"
            return self._answer(start_response, status, "application/json", body + b"\n")
        return self._answer(
            start_response,
            "404 Not Found",
            "text/plain",
            b"resc serves /metrics, /livez and /readyz\n",
        )

    @staticmethod
    def _answer(
        start_response: StartResponse, status: str, content_type: str, body: bytes
    ) -> list[bytes]:
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]
