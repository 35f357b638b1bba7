"""The promises of a todo queue, kept in Redis (so they outlive resc): a claim is a task
taken out of its queue with a deadline, until it is done, failed, retried, or its
deadline passes and it goes back into its queue. Every change is one Lua script
(resc/server/lua/), so that two resc processes can share the queues and the reaper.

Keys, beside the queue `<queue>`:
  `<queue>/claims`            hash: claim id -> "<attempt>:<mark>:<task>"
  `<queue>/claims/deadlines`  sorted set: claim id -> deadline, unix milliseconds
  `<queue>/claims/attempts`   hash: task -> times claimed, until done or failed
  `<queue>/failed` and its reasons hash (resc.core.failures): the failed tasks
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from enum import Enum
from importlib.resources import files
from typing import Any

from redis.backoff import NoBackoff
from redis.retry import Retry

from resc.connection import clients
from resc.core.keys import failed_reasons

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
    script re-sent after a lost reply would claim or notify twice."""

    def __init__(self, url: str) -> None:
        self.redis = clients.client(
            url,
            socket_timeout=5,
            socket_connect_timeout=5,
            retry=Retry(NoBackoff(), 0),
        )
        self._scripts = {name: self.redis.register_script(src) for name, src in _SOURCES.items()}

    def close(self) -> None:
        self.redis.close()

    def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return self._scripts[name](keys=keys, args=args)

    def claim(self, queue: TodoQueue, timeout_ms: int) -> Claim | None:
        claim_id = uuid.uuid4().hex
        zrem = queue.set is not None and queue.zrem == "before"
        keys = [queue.name, claims_key(queue.name), deadlines_key(queue.name)]
        keys += [attempts_key(queue.name)] + ([queue.set] if zrem and queue.set else [])
        found = self._run("claim", keys, [claim_id, _now_ms(), timeout_ms, "1" if zrem else "0"])
        if found is None:
            return None
        task, deadline, attempt = found
        return Claim(claim_id, task, int(deadline), int(attempt))

    def done(self, queue: TodoQueue, claim_id: str, done_queue: str | None) -> Outcome:
        return self._finish(queue, claim_id, "done", done_queue, [])

    def fail(self, queue: TodoQueue, claim_id: str, reason: str) -> Outcome:
        return self._finish(
            queue, claim_id, "fail", failed_key(queue.name), [reason, f"{time.time():.6f}"]
        )

    def _finish(
        self, queue: TodoQueue, claim_id: str, verb: str, target: str | None, extra: list[str]
    ) -> Outcome:
        zrem = queue.set is not None and queue.zrem == "after"
        keys = [claims_key(queue.name), deadlines_key(queue.name), attempts_key(queue.name)]
        keys += [target or queue.name, failed_reasons(failed_key(queue.name))]
        keys += [queue.set] if zrem and queue.set else []
        args = [claim_id, _now_ms(), verb, "1" if target else "0", "1" if zrem else "0"]
        return _outcome(self._run("finish", keys, args + extra))

    def extend(self, queue: TodoQueue, claim_id: str, timeout_ms: int) -> tuple[Outcome, int]:
        return self._extend(queue, claim_id, timeout_ms, "extend")

    def retry_later(self, queue: TodoQueue, claim_id: str, delay_ms: int) -> tuple[Outcome, int]:
        """Keep the claim until now + delay, then the reaper puts the task back."""
        return self._extend(queue, claim_id, delay_ms, "later")

    def _extend(
        self, queue: TodoQueue, claim_id: str, timeout_ms: int, mode: str
    ) -> tuple[Outcome, int]:
        keys = [claims_key(queue.name), deadlines_key(queue.name)]
        result = int(self._run("extend", keys, [claim_id, _now_ms(), timeout_ms, mode]))
        return _outcome(min(result, 1)), result

    def retry_now(self, queue: TodoQueue, claim_id: str) -> Outcome:
        expired, retried = self._requeue(queue, "one", claim_id)
        return Outcome.EXPIRED if expired == -1 else _outcome(retried)

    def reap(self, queue: TodoQueue) -> tuple[int, int]:
        """Put back the claims of `queue` whose deadline has passed: (expired, retried)."""
        expired, retried = 0, 0
        while True:
            more = self._requeue(queue, "due", str(REAP_BATCH))
            expired, retried = expired + more[0], retried + more[1]
            if sum(more) < REAP_BATCH:
                return expired, retried

    def _requeue(self, queue: TodoQueue, mode: str, what: str) -> tuple[int, int]:
        keys = [queue.name, claims_key(queue.name), deadlines_key(queue.name)]
        keys += [queue.set] if queue.set else []
        now_ms = _now_ms()
        args = [now_ms, mode, what, "1" if queue.set else "0", f"{now_ms / 1000:.6f}"]
        expired, retried = self._run("requeue", keys, args)
        return int(expired), int(retried)

    def lengths(self, queue: TodoQueue) -> tuple[int, int, int, int | None]:
        """The lengths of the queue, its claims, its failed list and its dedup set."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(queue.name)
        pipe.hlen(claims_key(queue.name))
        pipe.llen(failed_key(queue.name))
        if queue.set:
            pipe.zcard(queue.set)
        found = pipe.execute()
        return found[0], found[1], found[2], found[3] if queue.set else None


def _outcome(result: int) -> Outcome:
    if result == 1:
        return Outcome.OK
    return Outcome.EXPIRED if result == -1 else Outcome.UNKNOWN
