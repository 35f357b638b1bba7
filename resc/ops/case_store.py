"""The Redis of a config test case: in memory (fakeredis, with its Lua), committed to by
the daemon's own Store and scripts (resc/engine/lua), so that what a case checks is what
production does: deduplication across events through the sets, keys of the wrong type,
a key used both as a queue and a set, and the listener's messages.

One per case: its events go in turn through the watcher's taken queue and are committed
one at a time, as the daemon does with events that arrive one by one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import fakeredis
import redis

from resc.config.models import Config
from resc.config.models import Watcher as WatcherConfig
from resc.engine.rules import Result
from resc.engine.store import SCRIPTS, Listener, Outcome, Store


@dataclass(frozen=True, slots=True)
class Committed:
    """What committing one event did: each result with whether it was pushed (False:
    already in its set), or the reason the event went to the failed queue; and the
    messages published on the listener channel, in order."""

    results: list[tuple[Result, bool]]
    failure: str | None
    messages: list[bytes]


class CaseStore:
    """An empty in-memory Redis with the daemon's scripts loaded, for one watcher."""

    def __init__(self, watcher: WatcherConfig, settings: Config) -> None:
        self._watcher = watcher
        server = fakeredis.FakeServer()
        self._client: redis.Redis = fakeredis.FakeRedis(server=server)
        for source in SCRIPTS.values():
            # Loaded as the Store names them: by the SHA-1 of the text.
            self._client.script_load(source)
        # The daemon's Store, on a connection to the in-memory server: Store.connect()
        # asks the server for INFO, which fakeredis does not know, so the scripts are
        # loaded above instead.
        self._store = Store(
            "redis://in-memory/0",
            pool=redis.ConnectionPool(connection_class=fakeredis.FakeConnection, server=server),
        )
        self._listener = (
            Listener(
                settings.listener_channel,
                settings.listener_format == "json",
                watcher.input_queue,
            )
            if settings.listener_channel
            else None
        )
        self._pubsub: Any = None
        if self._listener is not None:
            self._pubsub = self._client.pubsub()  # type: ignore[no-untyped-call, unused-ignore]
            self._pubsub.subscribe(self._listener.channel)

    def commit(self, outcome: Outcome) -> Committed:
        """Take the event (into the taken queue) and commit its outcome."""
        cfg = self._watcher
        self._client.lpush(cfg.taken_queue, outcome.event)
        report = self._store.commit(
            cfg.taken_queue,
            cfg.failed_queue,
            [outcome],
            self._listener,
            input_queue=cfg.input_queue,
        )
        messages = self._messages()
        if report.status == "f":
            return Committed([], report.failures.get(0, outcome.failure), messages)
        return Committed(list(zip(outcome.results, report.pushed[0], strict=True)), None, messages)

    def _messages(self) -> list[bytes]:
        if self._pubsub is None:
            return []
        found = []
        # The subscription's confirmation comes first: not a published message. (Read with
        # ignore_subscribe_messages, it would be a None that ends the loop too early.)
        while (message := self._pubsub.get_message(timeout=0)) is not None:
            if message["type"] == "message":
                found.append(message["data"])
        return found

    def close(self) -> None:
        if self._pubsub is not None:
            self._pubsub.close()
        self._store.close()
        self._client.close()
