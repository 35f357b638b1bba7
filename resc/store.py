"""Redis: the only module that talks to it. Loads the Lua scripts of resc/lua once.

Commands that change queues are sent without client retries: a retried command whose
reply was lost would run twice (a commit pushing its tasks twice, a take leaving an
event in the taken queue that nobody processes). After a connection error the caller
recovers the taken queue instead, which is the truth about what is committed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files

import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.retry import Retry

from resc.errors import StoreError
from resc.keys import failed_reasons
from resc.rules import Result

_LUA = {
    name: (files("resc") / "lua" / f"{name}.lua").read_text("utf-8")
    for name in ("take", "recover", "commit")
}

# A blocking take waits this long, so that a stop request is seen promptly.
BLOCK_TIMEOUT_S = 1.0


_USER_PASSWORD = re.compile(r"(://[^/@]*?:)[^/@]*@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*")


def redact_url(url: str) -> str:
    """The URL with its password (in the user part or a `password=` query parameter)
    replaced by ***, for messages and logs."""
    return _QUERY_PASSWORD.sub(r"\1***", _USER_PASSWORD.sub(r"\1***@", url, count=1))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to commit for one event: its results, or the reason it failed."""

    event: bytes
    results: Sequence[Result] = ()
    failure: str | None = None


@dataclass(frozen=True, slots=True)
class CommitReport:
    """Per event, in order: 'c' committed, 'f' failed, 'm' missing from the taken queue;
    `pushed[i]` tells for each result of a committed event whether it was pushed (True)
    or already in its set (False)."""

    status: str
    pushed: list[list[bool]]
    failures: dict[int, str]  # events that failed at commit time: index -> reason


@contextmanager
def _converted(action: str) -> Iterator[None]:
    try:
        yield
    except redis.ConnectionError as exc:
        raise StoreError(f"{action}: connection lost: {exc}") from None
    except redis.TimeoutError as exc:
        raise StoreError(f"{action}: no answer from Redis: {exc}") from None
    except redis.RedisError as exc:
        raise StoreError(f"{action}: {exc}") from None


class Store:
    """One connection to Redis, for one watcher."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.display_url = redact_url(url)
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=BLOCK_TIMEOUT_S + 10,
            socket_connect_timeout=5,
            retry=Retry(NoBackoff(), 0),
            client_name="resc",
        )
        self._has_lmove = True
        self._scripts: dict[str, Script] = {}

    def close(self) -> None:
        self._redis.close()

    def connect(self) -> None:
        """Check the server and register the scripts. StoreError when it is unreachable."""
        with _converted(f"connecting to {self.display_url}"):
            # A fresh connection: the old one may be half-broken.
            self._redis.connection_pool.disconnect()
            info = self._redis.info("server")
            version = tuple(int(p) for p in str(info.get("redis_version", "0")).split(".")[:2])
            self._has_lmove = version >= (6, 2)
            # Redis 7 refuses a script flagged by a shebang when it is out of memory,
            # before it runs, instead of failing at its first write.
            shebang = "#!lua\n" if version >= (7, 0) else ""
            self._scripts = {
                name: self._redis.register_script(shebang + source) for name, source in _LUA.items()
            }

    def recover(self, input_queue: str, taken_queue: str) -> int:
        """Move every event of the taken queue back to the input queue, to be taken first."""
        with _converted(f"recovering {taken_queue}"):
            return int(self._scripts["recover"](keys=[input_queue, taken_queue]))

    def take(self, input_queue: str, taken_queue: str, most: int) -> list[bytes]:
        """Move up to `most` waiting events to the taken queue, oldest first; no wait."""
        with _converted(f"taking from {input_queue}"):
            return list(self._scripts["take"](keys=[input_queue, taken_queue], args=[most]))

    def wait_take(self, input_queue: str, taken_queue: str) -> bytes | None:
        """Wait up to BLOCK_TIMEOUT_S for one event and move it to the taken queue."""
        with _converted(f"taking from {input_queue}"):
            if self._has_lmove:
                event = self._redis.blmove(
                    input_queue,
                    taken_queue,
                    BLOCK_TIMEOUT_S,  # type: ignore[arg-type]  # Redis takes seconds as a float
                    "RIGHT",
                    "LEFT",
                )
            else:
                event = self._redis.brpoplpush(input_queue, taken_queue, BLOCK_TIMEOUT_S)
            return event  # type: ignore[return-value]

    def commit(
        self,
        taken_queue: str,
        failed_queue: str,
        outcomes: Sequence[Outcome],
        listener_channel: str | None,
    ) -> CommitReport:
        """Commit a batch atomically: each event's tasks pushed (deduplicated through its
        set) and the event removed from the taken queue, or the event moved to the
        failed queue. A key of the wrong type fails the events that use it."""
        failures: dict[int, str] = {}
        while True:
            keys, args = self._commit_arguments(
                taken_queue, failed_queue, outcomes, failures, listener_channel
            )
            with _converted(f"committing to {taken_queue}"):
                status = self._scripts["commit"](keys=keys, args=args)
            status = status.decode() if isinstance(status, bytes) else str(status)
            if not status.startswith("!"):
                return self._report(status, failures)
            index, _, actual = status[1:].partition(":")
            key = keys[int(index) - 1]
            if int(index) <= 3:
                name = key.decode(errors="replace")
                raise StoreError(f"{name} holds a {actual}, where resc keeps its own list/hash")
            for i, outcome in enumerate(outcomes):
                if (
                    i not in failures
                    and outcome.failure is None
                    and any(key in (r.queue, r.set) for r in outcome.results)
                ):
                    failures[i] = f"key {key.decode(errors='replace')} holds a {actual}"

    @staticmethod
    def _commit_arguments(
        taken_queue: str,
        failed_queue: str,
        outcomes: Sequence[Outcome],
        failures: dict[int, str],
        listener_channel: str | None,
    ) -> tuple[list[bytes], list[bytes | int | str]]:
        keys = [taken_queue.encode(), failed_queue.encode(), failed_reasons(failed_queue).encode()]
        index_of: dict[bytes, int] = {}
        role: dict[bytes, str] = {k: "own" for k in keys}
        args: list[bytes | int | str] = [int(time.time()), listener_channel or ""]

        def index(key: bytes) -> int:
            found = index_of.get(key)
            if found is None:
                keys.append(key)
                found = index_of[key] = len(keys)
            return found

        for i, outcome in enumerate(outcomes):
            failure = failures.get(i, outcome.failure)
            if failure is None:
                failure = _role_conflict(outcome.results, role)
                if failure is not None:
                    failures[i] = failure
            if failure is not None:
                args += (outcome.event, -1, failure)
                continue
            args += (outcome.event, len(outcome.results))
            for r in outcome.results:
                args += (r.task, index(r.queue), 0 if r.set is None else index(r.set))
        return keys, args

    @staticmethod
    def _report(status: str, failures: dict[int, str]) -> CommitReport:
        pushed: list[list[bool]] = []
        events = ""
        for letter in status:
            if letter in "cfm":
                events += letter
                pushed.append([])
            else:
                pushed[-1].append(letter == "p")
        return CommitReport(events, pushed, failures)


def _role_conflict(results: Sequence[Result], role: dict[bytes, str]) -> str | None:
    """A reason to fail the event when it would use a key both as a queue and as a set,
    or use one of the watcher's own keys; None when its keys are fine."""
    claimed: dict[bytes, str] = {}
    for r in results:
        for key, wanted in ((r.queue, "queue"), (r.set, "set")):
            if key is None:
                continue
            current = role.get(key) or claimed.setdefault(key, wanted)
            if current != wanted:
                name = key.decode("utf-8", "replace")
                if current == "own":
                    return f"{name} is one of the watcher's own queues, not a todo {wanted}"
                return f"{name} would be used both as a todo queue and as a set"
    role.update(claimed)
    return None
