"""The live flow: the messages of the listener channel (resc/engine/lua/commit.lua
publishes one per task and one per event done), kept in a ring of the latest few
hundred, each numbered, for the page to poll what came after the last it has. A JSON
message is handed on parsed; a text one (the original's format) as its text."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from resc.connection import clients
from resc.core.errors import StoreError
from resc.core.logs import get_logger

log = get_logger("resc.dashboard")

KEPT = 500
# A message longer than this is cut: the page shows a tail, not a dump.
MOST_CHARS = 4000
RETRY_S = 1.0


@dataclass(frozen=True, slots=True)
class Message:
    seq: int
    time_s: float
    data: dict[str, Any] | str


class LiveTail:
    """Subscribes to `channel` from start() to close(), again after a lost connection."""

    def __init__(self, url: str, channel: str | None) -> None:
        self.url = url
        self.channel = channel
        self.error: str | None = None
        self._messages: deque[Message] = deque(maxlen=KEPT)
        self._seq = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="dashboard live")

    def start(self) -> None:
        if self.channel is not None:
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def after(self, seq: int) -> tuple[list[Message], int]:
        """The kept messages numbered above `seq`, and the latest number."""
        with self._lock:
            return [m for m in self._messages if m.seq > seq], self._seq

    def _loop(self) -> None:
        assert self.channel is not None
        while not self._stop.is_set():
            # On a cluster, a RedisCluster: its pubsub subscribes on one node, and a
            # PUBLISH on any node reaches every node's subscribers.
            probed: clients.ProbedClient | None = None
            try:
                probed = clients.ProbedClient(
                    self.url, {"socket_connect_timeout": 5, "retry": Retry(NoBackoff(), 0)}
                )
                pubsub = probed.get().pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call, unused-ignore]
                pubsub.subscribe(self.channel)
                self.error = None
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None:
                        self._keep(message["data"])
            except (redis.RedisError, RedisClusterException, StoreError) as exc:
                if self.error is None:
                    log.warning("dashboard: listener channel unavailable", error=str(exc))
                self.error = str(exc)
                self._stop.wait(RETRY_S)
            finally:
                if probed is not None:
                    probed.close()

    def _keep(self, raw: bytes | str) -> None:
        text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else str(raw)
        data: dict[str, Any] | str = text[:MOST_CHARS]
        if text.startswith("{"):
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                data = {k: _cut(v) for k, v in parsed.items()}
        with self._lock:
            self._seq += 1
            self._messages.append(Message(self._seq, time.time(), data))


def _cut(value: Any) -> Any:
    return value[:MOST_CHARS] if isinstance(value, str) else value
