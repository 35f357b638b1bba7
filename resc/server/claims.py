"""The promises of a todo queue, kept in Redis (so they outlive resc): a claim is a task
taken out of its queue with a deadline, until it is done, failed, retried, or its
deadline passes and it goes back into its queue. Every change is one Lua script
(resc/server/lua/), so that two resc processes can share the queues and the reaper.

Keys, beside the queue `<queue>`:
  `<queue>/claims`            hash: claim id -> "<attempt>:<mark>:<task>"
  `<queue>/claims/deadlines`  sorted set: claim id -> deadline, unix milliseconds
  `<queue>/claims/attempts`   hash: task -> times claimed, until done or failed
  `<queue>/failed` and its reasons hash (resc.core.failures): the failed tasks
and reads `<queue>/delayed` (resc.core.keys.delayed_tasks): the tasks not due yet.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from enum import Enum
from importlib.resources import files
from typing import Any, NamedTuple

from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from resc.connection import clients
from resc.core.keys import delayed_tasks, failed_reasons

_SCRIPTS = ("claim", "finish", "extend", "requeue")
_SOURCES = {
    name: (files("resc.server") / "lua" / f"{name}.lua").read_text("utf-8") for name in _SCRIPTS
}
# Claims put back per reaper script call: a long backlog is worked off in steps.
REAP_BATCH = 1000


def claims_key(queue: str) -> str:
    return f"{queue}/claims"


def deadlines_key(queue: str) -> str:
    return f"{queue}/claims/deadlines"


def attempts_key(queue: str) -> str:
    return f"{queue}/claims/attempts"


def failed_key(queue: str) -> str:
    """The failed list of a todo queue: the one the worker library writes."""
    return f"{queue}/failed"


@dataclass(frozen=True)
class TodoQueue:
    """A todo queue the API hands out: its name, its dedup set (if any), and when a task
    leaves that set."""

    name: str
    set: str | None
    zrem: str  # "before" or "after"


@dataclass(frozen=True)
class Claim:
    id: str
    task: bytes
    deadline_ms: int
    attempt: int


class Outcome(Enum):
    OK = "ok"
    UNKNOWN = "unknown"  # no such claim: never made, or done, failed, put back
    EXPIRED = "expired"  # past its deadline or retried with a delay: the reaper's now


def _now_ms() -> int:
    return int(time.time() * 1000)


class ClaimStore:
    """The claims of todo queues in one Redis. Commands go without client retry: a
    script re-sent after a lost reply would claim or notify twice.

    The requests' calls (claim, done, fail, extend, retry, push) are coroutines on the
    asyncio client `aio`, which belongs to the event loop of the HTTP server: a request
    waiting on Redis holds no thread. The reaper's thread and the other callers use the
    blocking client `redis`."""

    def __init__(self, url: str) -> None:
        options: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 5}
        self.redis = clients.client(url, retry=Retry(NoBackoff(), 0), **options)
        # Connects on first use, in the loop that uses it; aclose() there.
        self.aio = clients.async_client(url, retry=AsyncRetry(NoBackoff(), 0), **options)
        self._scripts = {name: self.redis.register_script(src) for name, src in _SOURCES.items()}
        self._aio_scripts = {name: self.aio.register_script(src) for name, src in _SOURCES.items()}

    def close(self) -> None:
        self.redis.close()

    async def aclose(self) -> None:
        await self.aio.aclose()

    def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return self._scripts[name](keys=keys, args=args)

    async def _arun(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._aio_scripts[name](keys=keys, args=args)

    async def push(self, queue: str, events: list[str]) -> int:
        """LPUSH `events` to `queue` in one command: the queue's new length."""
        length: int = await self.aio.lpush(queue, *events)
        return length

    async def claim(self, queue: TodoQueue, timeout_ms: int) -> Claim | None:
        claim_id = uuid.uuid4().hex
        zrem = queue.set is not None and queue.zrem == "before"
        keys = [queue.name, claims_key(queue.name), deadlines_key(queue.name)]
        keys += [attempts_key(queue.name)] + ([queue.set] if zrem and queue.set else [])
        args = [claim_id, _now_ms(), timeout_ms, "1" if zrem else "0"]
        found = await self._arun("claim", keys, args)
        if found is None:
            return None
        task, deadline, attempt = found
        return Claim(claim_id, task, int(deadline), int(attempt))

    async def done(self, queue: TodoQueue, claim_id: str, done_queue: str | None) -> Outcome:
        return await self._finish(queue, claim_id, "done", done_queue, [])

    async def fail(self, queue: TodoQueue, claim_id: str, reason: str) -> Outcome:
        return await self._finish(
            queue, claim_id, "fail", failed_key(queue.name), [reason, f"{time.time():.6f}"]
        )

    async def _finish(
        self, queue: TodoQueue, claim_id: str, verb: str, target: str | None, extra: list[str]
    ) -> Outcome:
        zrem = queue.set is not None and queue.zrem == "after"
        keys = [claims_key(queue.name), deadlines_key(queue.name), attempts_key(queue.name)]
        keys += [target or queue.name, failed_reasons(failed_key(queue.name))]
        keys += [queue.set] if zrem and queue.set else []
        args = [claim_id, _now_ms(), verb, "1" if target else "0", "1" if zrem else "0"]
        return _outcome(await self._arun("finish", keys, args + extra))

    async def extend(self, queue: TodoQueue, claim_id: str, timeout_ms: int) -> tuple[Outcome, int]:
        return await self._extend(queue, claim_id, timeout_ms, "extend")

    async def retry_later(
        self, queue: TodoQueue, claim_id: str, delay_ms: int
    ) -> tuple[Outcome, int]:
        """Keep the claim until now + delay, then the reaper puts the task back."""
        return await self._extend(queue, claim_id, delay_ms, "later")

    async def _extend(
        self, queue: TodoQueue, claim_id: str, timeout_ms: int, mode: str
    ) -> tuple[Outcome, int]:
        keys = [claims_key(queue.name), deadlines_key(queue.name)]
        result = int(await self._arun("extend", keys, [claim_id, _now_ms(), timeout_ms, mode]))
        return _outcome(min(result, 1)), result

    async def retry_now(self, queue: TodoQueue, claim_id: str) -> Outcome:
        keys, args = self._requeue_call(queue, "one", claim_id)
        expired, retried = await self._arun("requeue", keys, args)
        return Outcome.EXPIRED if int(expired) == -1 else _outcome(int(retried))

    def reap(self, queue: TodoQueue) -> tuple[int, int]:
        """Put back the claims of `queue` whose deadline has passed: (expired, retried)."""
        expired, retried = 0, 0
        while True:
            more = self._requeue(queue, "due", str(REAP_BATCH))
            expired, retried = expired + more[0], retried + more[1]
            if sum(more) < REAP_BATCH:
                return expired, retried

    def _requeue(self, queue: TodoQueue, mode: str, what: str) -> tuple[int, int]:
        expired, retried = self._run("requeue", *self._requeue_call(queue, mode, what))
        return int(expired), int(retried)

    def _requeue_call(self, queue: TodoQueue, mode: str, what: str) -> tuple[list[str], list[Any]]:
        keys = [queue.name, claims_key(queue.name), deadlines_key(queue.name)]
        keys += [queue.set] if queue.set else []
        now_ms = _now_ms()
        return keys, [now_ms, mode, what, "1" if queue.set else "0", f"{now_ms / 1000:.6f}"]

    def lengths(self, queue: TodoQueue) -> QueueLengths:
        """The lengths of the queue, its claims, its failed list, its dedup set and its
        delayed tasks, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(queue.name)
        pipe.hlen(claims_key(queue.name))
        pipe.llen(failed_key(queue.name))
        pipe.zcard(delayed_tasks(queue.name))
        pipe.zrange(delayed_tasks(queue.name), 0, 0, withscores=True)
        if queue.set:
            pipe.zcard(queue.set)
        found = pipe.execute()
        first = found[4]
        return QueueLengths(
            found[0],
            found[1],
            found[2],
            found[5] if queue.set else None,
            found[3],
            first[0][1] / 1000 if first else None,
        )


class QueueLengths(NamedTuple):
    queue: int
    claims: int
    failed: int
    set: int | None  # None: the queue has no dedup set
    delayed: int  # tasks not due yet (a make's delay or at)
    next_due: float | None  # when the first of them is due, unix seconds


def _outcome(result: int) -> Outcome:
    if result == 1:
        return Outcome.OK
    return Outcome.EXPIRED if result == -1 else Outcome.UNKNOWN
