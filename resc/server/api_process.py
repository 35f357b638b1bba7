"""The HTTP API in a process of its own beside `resc run`'s watchers, so that no load on
the API takes the interpreter from them (http.api_process, on by default).

The daemon binds the public address itself, so that a bad one is a clear error before
anything starts. It serves /metrics, /livez, /readyz and the dashboard on a Unix socket
in a private directory, and starts `python -m resc.server.api_process` with the bound
socket (inherited) and the API's spec on its stdin. That process answers the API and its
docs, and hands every other request to the daemon over the Unix socket (Upstream).

The API's process lives as long as its stdin stays open: when the daemon is gone, even by
kill -9, the process ends too. The daemon restarts it when it ends by itself, and stops
it (SIGTERM, then SIGKILL) when the daemon stops. Its own session keeps a terminal's
Ctrl-C away from it: the daemon decides when it stops.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import IO

from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from resc.config.models import Config
from resc.core import logs
from resc.core.errors import EXIT_FATAL, EXIT_OK, RescError
from resc.core.logs import get_logger
from resc.core.metrics import Observed, registry_for
from resc.engine.daemon import Daemon
from resc.ops.todo_metrics import TodoCollector
from resc.server.access import Tokens
from resc.server.app import API_PREFIX, ASSETS, build_app
from resc.server.fastpath import FastPaths
from resc.server.listener import SHUTDOWN_S, HttpListener, address_of, bind
from resc.server.service import ApiSpec, Extension, warn_if_open
from resc.server.upstream import Upstream

log = get_logger("resc.http")

# The wait before a process that ended by itself is started again: doubled each time
# it ends within RESTART_RESET_S of its start, up to RESTART_MAX_S.
RESTART_DELAY_S = 1.0
RESTART_MAX_S = 30.0
RESTART_RESET_S = 60.0
_SOCKET_NAME = "daemon.sock"


def answers_itself(path: str) -> bool:
    """The paths the API's process answers; the daemon answers every other one."""
    return (
        path.startswith(API_PREFIX)
        or path in ("/docs", "/openapi.json")
        or path.startswith(f"{ASSETS}/")
    )


class ApiProcess:
    """The HTTP server of a daemon (resc.engine.daemon.Service), with its API in a
    process of its own. RescError when the address cannot be bound or a token is not
    set."""

    def __init__(
        self,
        config: Config,
        listen: str,
        metrics_of: Observed,
        readiness: Callable[[], dict[str, str]],
        collectors: Sequence[Collector] = (),
        extensions: Sequence[Extension] = (),
    ) -> None:
        self.spec = ApiSpec.of(config, listen)
        # The tokens are read here too, so that a missing one stops resc at start.
        tokens = Tokens.from_environment(self.spec.http)
        self._public = bind(listen)
        self.address = address_of(self._public)
        self._directory = tempfile.mkdtemp(prefix="resc-http-")
        inner = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        inner.bind(os.path.join(self._directory, _SOCKET_NAME))
        inner.listen(128)
        registry = registry_for(metrics_of)
        for collector in collectors:
            registry.register(collector)
        app = build_app(registry, readiness)
        self.extensions = list(extensions)
        for extension in self.extensions:
            extension.install(app)
        self.listener = HttpListener(app, inner)
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        self._watcher = threading.Thread(target=self._watch, daemon=True, name="http api process")
        warn_if_open(tokens, listen)

    @property
    def pid(self) -> int | None:
        """The API process's pid, while it runs."""
        child = self._child
        return child.pid if child is not None and child.poll() is None else None

    def start(self) -> None:
        for extension in self.extensions:
            extension.start()
        self.listener.start()
        self._spawn()
        self._watcher.start()
        log.info("HTTP server started", address=self.address, api_pid=self.pid)

    def _spawn(self) -> None:
        spec = {
            **self.spec.to_json(),
            "fd": self._public.fileno(),
            "upstream": os.path.join(self._directory, _SOCKET_NAME),
        }
        with self._lock:
            if self._closing.is_set():
                return
            child = subprocess.Popen(
                [sys.executable, "-m", "resc.server.api_process"],
                stdin=subprocess.PIPE,
                pass_fds=[self._public.fileno()],
                start_new_session=True,
            )
            assert child.stdin is not None
            # The spec holds the Redis URL and its password: a pipe, not argv or the
            # environment, which other users of the host can read.
            child.stdin.write(json.dumps(spec).encode() + b"\n")
            child.stdin.flush()
            self._child = child

    def _watch(self) -> None:
        delay = RESTART_DELAY_S
        while not self._closing.is_set():
            child = self._child
            if child is None:
                return
            started = time.monotonic()
            status = child.wait()
            if self._closing.is_set():
                return
            if time.monotonic() - started >= RESTART_RESET_S:
                delay = RESTART_DELAY_S
            log.error(
                "the HTTP API process ended: starting it again",
                status=status,
                delay_s=delay,
            )
            _close_stdin(child)
            if self._closing.wait(delay):
                return
            delay = min(RESTART_MAX_S, delay * 2)
            try:
                self._spawn()
            except OSError as exc:
                log.error("the HTTP API process cannot be started", error=str(exc))
                return

    def close(self) -> None:
        with self._lock:
            self._closing.set()
            child = self._child
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
            try:
                child.wait(SHUTDOWN_S + 2)
            except subprocess.TimeoutExpired:
                log.warning("the HTTP API process did not stop in time: killing it")
                child.kill()
                child.wait()
            _close_stdin(child)
        self.listener.close()
        for extension in self.extensions:
            extension.close()
        with contextlib.suppress(OSError):
            self._public.close()
        shutil.rmtree(self._directory, ignore_errors=True)


def _close_stdin(child: subprocess.Popen[bytes]) -> None:
    if child.stdin is not None:
        with contextlib.suppress(OSError):
            child.stdin.close()


def daemon_api_process(
    daemon: Daemon, listen: str, extensions: Sequence[Extension] = ()
) -> ApiProcess:
    """The HTTP server of a running daemon, its API in a process of its own: the daemon's
    metrics (with the todo queues' and the set_ttl sweep's), its readiness."""
    todo = TodoCollector(lambda: daemon.config, daemon.expiry_stats, daemon.scheduler_stats)
    return ApiProcess(
        daemon.config,
        listen,
        daemon,
        daemon.not_ready,
        collectors=[todo],
        extensions=extensions,
    )


def main(stdin: IO[bytes] = sys.stdin.buffer) -> int:
    """The API's process: the spec is the first line of stdin; it serves until stdin
    closes or SIGTERM comes."""
    logs.configure()
    spec_json = json.loads(stdin.readline() or b"null")
    if not isinstance(spec_json, dict):
        print("resc: the HTTP API process expects its spec on stdin", file=sys.stderr)
        return EXIT_FATAL
    spec = ApiSpec.from_json(spec_json)
    try:
        api = spec.api()
    except RescError as exc:
        print(f"resc: {exc}", file=sys.stderr)
        return EXIT_FATAL
    # The health paths are the daemon's; here they are only in the OpenAPI document.
    app = build_app(CollectorRegistry(), lambda: {})
    api.install(app)
    upstream = Upstream(
        FastPaths(app, api), answers_itself, spec_json["upstream"], spec.http.max_body_bytes
    )

    async def on_close() -> None:
        await upstream.aclose()
        await api.store.aclose()

    public = socket.socket(fileno=spec_json["fd"])
    listener = HttpListener(upstream, public, on_close=on_close)
    stop = threading.Event()

    def on_signal(signum: int, _: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def until_stdin_closes() -> None:
        # The descriptor, not the buffered reader: a thread blocked in the reader holds
        # its lock, which the interpreter's shutdown then cannot take.
        while os.read(stdin.fileno(), 4096):
            pass
        stop.set()

    threading.Thread(target=until_stdin_closes, daemon=True, name="daemon watch").start()
    api.start()
    listener.start()
    log.info(
        "HTTP API ready",
        produce=" ".join(sorted(api.produce)) or "-",
        consume=" ".join(sorted(api.todo)) or "-",
        pid=os.getpid(),
    )
    stop.wait()
    api.closing.set()
    listener.close()
    api.close()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
