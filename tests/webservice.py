"""A scripted HTTP server for fetch tests: each path answers a sequence of answers (500
then 200), with any headers, delays, chunked or cut-off bodies; every request is
recorded with its method, headers, body and arrival time."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Answer:
    """One answer. `data` is sent as JSON unless it is bytes. `chunked` sends the body
    without Content-Length; `cut_after` declares the whole body but closes the connection
    after that many bytes."""

    data: Any = field(default_factory=dict)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    chunked: bool = False
    cut_after: int | None = None

    @property
    def body(self) -> bytes:
        return self.data if isinstance(self.data, bytes) else json.dumps(self.data).encode()


@dataclass(frozen=True)
class Seen:
    """A request as the server received it (header names in lower case)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival


class ScriptedService:
    """Answers by path (the query string is ignored for the choice, kept in `requests`):
    the answers given to `script` in turn, the last one for good. Unscripted: 404."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.in_flight = 0
        self.max_in_flight = 0  # most requests being answered at the same time
        self._scripts: dict[str, list[Answer]] = {}
        self._lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                service._handle(self)

            do_POST = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def script(self, path: str, *answers: Answer) -> None:
        """Answers for `path`: with a query string, for that exact URL only."""
        with self._lock:
            self._scripts[path] = list(answers)

    def answer(self, path: str, data: Any, status: int = 200, delay_s: float = 0.0) -> None:
        """One answer for `path`, given to every request."""
        self.script(path, Answer(data, status=status, delay_s=delay_s))

    @property
    def paths(self) -> list[str]:
        """The path (with query string) of every request so far, in order."""
        with self._lock:
            return [seen.path for seen in self.requests]

    def requests_to(self, path: str) -> list[Seen]:
        with self._lock:
            return [seen for seen in self.requests if urlsplit(seen.path).path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _next_answer(self, path: str) -> Answer:
        with self._lock:
            script = self._scripts.get(path) or self._scripts.get(urlsplit(path).path)
            if not script:
                return Answer({"error": "not found"}, status=404)
            return script.pop(0) if len(script) > 1 else script[0]

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        body = handler.rfile.read(length) if length else b""
        seen = Seen(
            handler.command,
            handler.path,
            {k.lower(): v for k, v in handler.headers.items()},
            body,
            time.monotonic(),
        )
        with self._lock:
            self.requests.append(seen)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            answer = self._next_answer(handler.path)
            if answer.delay_s:
                time.sleep(answer.delay_s)
            # The client may have given up waiting: what a hanging service test wants.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self._send(handler, answer)
        finally:
            with self._lock:
                self.in_flight -= 1

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, answer: Answer) -> None:
        body = answer.body
        handler.send_response(answer.status)
        handler.send_header("content-type", "application/json")
        for name, value in answer.headers.items():
            handler.send_header(name, value)
        if answer.chunked:
            handler.send_header("transfer-encoding", "chunked")
            handler.end_headers()
            for start in range(0, len(body), 1000):
                chunk = body[start : start + 1000]
                handler.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            handler.wfile.write(b"0\r\n\r\n")
            return
        handler.send_header("content-length", str(len(body)))
        if answer.cut_after is not None:
            handler.send_header("connection", "close")
            handler.end_headers()
            handler.wfile.write(body[: answer.cut_after])
            handler.close_connection = True
            return
        handler.end_headers()
        handler.wfile.write(body)


@contextmanager
def scripted_service() -> Iterator[ScriptedService]:
    service = ScriptedService()
    try:
        yield service
    finally:
        service.close()
