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
On a Redis Cluster all of them must share the queue's slot (cluster_refusal); the done
queue need not.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from enum import Enum
from importlib.resources import files
from typing import Any, NamedTuple

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.commands.core import AsyncScript, Script
from redis.exceptions import SlotNotCoveredError
from redis.retry import Retry

from resc.connection import clients
from resc.core.errors import StoreError
from resc.core.keys import delayed_tasks, failed_reasons
from resc.core.slots import same_slot, slot_of, tagged

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


class KeysApart(StoreError):
    """On a Redis Cluster, the keys of a todo queue's promises are not all in its slot."""


def cluster_refusal(queue: TodoQueue) -> str | None:
    """Why the promises of `queue` cannot be kept on a Redis Cluster (keys its scripts
    use together in other slots than the queue's), saying what to write; None when they
    can. The done queue may be elsewhere: done is two steps then (ClaimStore.done)."""
    failed = failed_key(queue.name)
    keys = [claims_key(queue.name), deadlines_key(queue.name), attempts_key(queue.name)]
    keys += [failed, failed_reasons(failed), delayed_tasks(queue.name)]
    keys += [queue.set] if queue.set is not None else []
    apart = [key for key in keys if slot_of(key) != slot_of(queue.name)]
    if not apart:
        return None
    if apart == [queue.set]:
        return (
            f"on a Redis Cluster the dedup set of {queue.name!r} must share its slot, and "
            f"{queue.set!r} does not: give the set the queue's hash tag"
        )
    also = ", and its set the same tag" if queue.set is not None else ""
    return (
        f"on a Redis Cluster the keys of the promises of {queue.name!r} must share its "
        f"slot, and {', '.join(apart)} do not: give the queue a hash tag, as in "
        f"{tagged(queue.name)!r}{also}"
    )


class ClaimStore:
    """The claims of todo queues in one Redis, or a Redis Cluster (a cluster URL, or a
    server URL of a node, known at the first command). Commands go without client retry:
    a script re-sent after a lost reply would claim or notify twice.

    The requests' calls (claim, done, fail, extend, retry, push) are coroutines on an
    asyncio client, which belongs to the event loop of the HTTP server: a request
    waiting on Redis holds no thread. The reaper's thread and the other callers use a
    blocking client.

    On a cluster every script of a queue runs in the queue's slot: a queue whose keys
    are not all there (cluster_refusal) is refused with KeysApart before any command."""

    def __init__(self, url: str) -> None:
        options: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 5}
        self._sync = clients.ProbedClient(url, {**options, "retry": Retry(NoBackoff(), 0)})
        # Connects on first use, in the loop that uses it; aclose() there.
        self._aio = clients.AsyncProbedClient(url, {**options, "retry": AsyncRetry(NoBackoff(), 0)})
        self._scripts: dict[str, Script] = {}
        self._scripts_of: object = None
        self._aio_scripts: dict[str, AsyncScript] = {}
        self._aio_scripts_of: object = None

    def close(self) -> None:
        self._sync.close()

    async def aclose(self) -> None:
        await self._aio.aclose()

    def redis(self) -> redis.Redis | RedisCluster:
        """The blocking client (a RedisCluster on a cluster, known at its first use)."""
        return self._sync.get()

    def _check(self, client: object, queue: TodoQueue) -> None:
        if isinstance(client, RedisCluster | AsyncRedisCluster):
            refusal = cluster_refusal(queue)
            if refusal is not None:
                raise KeysApart(refusal)

    def _run(self, name: str, queue: TodoQueue, keys: list[str], args: list[Any]) -> Any:
        client = self._sync.get()
        self._check(client, queue)
        if self._scripts_of is not client:
            self._scripts = {n: client.register_script(src) for n, src in _SOURCES.items()}
            self._scripts_of = client
        return self._scripts[name](keys=keys, args=args)

    async def _client(self, queue: TodoQueue | None = None) -> aioredis.Redis | AsyncRedisCluster:
        client = await self._aio.get()
        if queue is not None:
            self._check(client, queue)
        return client

    async def _arun(self, name: str, queue: TodoQueue, keys: list[str], args: list[Any]) -> Any:
        client = await self._client(queue)
        if self._aio_scripts_of is not client:
            self._aio_scripts = {n: client.register_script(src) for n, src in _SOURCES.items()}
            self._aio_scripts_of = client
        # A NOSCRIPT reply (a replica promoted since) is answered by loading it and
        # sending it again: it did not run.
        return await self._aio_scripts[name](keys=keys, args=args)

    async def push(self, queue: str, events: list[str]) -> int:
        """LPUSH `events` to `queue` in one command: the queue's new length."""
        client = await self._client()
        length: int = await client.lpush(queue, *events)
        return length

    async def push_many(self, batch: dict[str, list[str]]) -> Pushed:
        """LPUSH the events of each queue of `batch`, one command per queue. On one
        server, in one transaction: all or nothing. On a cluster, the queues are grouped
        by the master serving their slot, and each group is sent to its master in one
        round trip, all groups at once: each queue's push is atomic, the batch is not
        (a master that fails leaves the queues of the others pushed)."""
        client = await self._client()
        if not isinstance(client, AsyncRedisCluster):
            pipe = client.pipeline(transaction=True)
            for queue, events in batch.items():
                pipe.lpush(queue, *events)
            await pipe.execute()
            return Pushed({queue: len(events) for queue, events in batch.items()}, {})
        groups: dict[str, list[str]] = {}
        refused: dict[str, BaseException] = {}
        for queue in batch:
            node = client.get_node_from_key(queue)
            if node is None:
                refused[queue] = SlotNotCoveredError(f"no master serves the slot of {queue}")
            else:
                groups.setdefault(node.name, []).append(queue)

        async def send(queues: list[str]) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for queue in queues:
                pipe.lpush(queue, *batch[queue])
            try:
                # A MOVED, ASK or TRYAGAIN reply is sent again to where it points: the
                # push did not run.
                return list(await pipe.execute(raise_on_error=False))
            except (redis.ConnectionError, redis.TimeoutError):
                # As RedisCluster does after a lost connection outside a pipeline: ask
                # the cluster again where the slots live, at the next command.
                client._initialize = True
                raise

        replies = await asyncio.gather(
            *(send(queues) for queues in groups.values()), return_exceptions=True
        )
        pushed: dict[str, int] = {}
        for queues, reply in zip(groups.values(), replies, strict=True):
            for i, queue in enumerate(queues):
                found = reply if isinstance(reply, BaseException) else reply[i]
                if isinstance(found, BaseException):
                    refused[queue] = found
                else:
                    pushed[queue] = len(batch[queue])
        return Pushed(pushed, refused)

    def length(self, queue: str) -> int:
        found: int = self._sync.get().llen(queue)
        return found

    def ping(self) -> None:
        self._sync.get().ping()

    async def claim(self, queue: TodoQueue, timeout_ms: int) -> Claim | None:
        claim_id = uuid.uuid4().hex
        zrem = queue.set is not None and queue.zrem == "before"
        keys = [queue.name, claims_key(queue.name), deadlines_key(queue.name)]
        keys += [attempts_key(queue.name)] + ([queue.set] if zrem and queue.set else [])
        args = [claim_id, _now_ms(), timeout_ms, "1" if zrem else "0"]
        found = await self._arun("claim", queue, keys, args)
        if found is None:
            return None
        task, deadline, attempt = found
        return Claim(claim_id, task, int(deadline), int(attempt))

    async def done(self, queue: TodoQueue, claim_id: str, done_queue: str | None) -> Outcome:
        """Notify the done queue and forget the claim: one script, exactly once, unless
        the done queue is in another slot of a cluster. Then in two steps, in the order
        that never loses a notice: the claim is checked (held, not past its deadline),
        the task pushed to the done queue, then the claim finished. At least once: when
        the second step does not happen (Redis lost, resc killed, the deadline passed
        in between), the claim is still held, the reaper puts the task back, and it is
        done and notified again."""
        client = await self._client(queue)
        if (
            done_queue is None
            or not isinstance(client, AsyncRedisCluster)
            or same_slot(done_queue, queue.name)
        ):
            return await self._finish(queue, claim_id, "done", done_queue, [])
        task, outcome = await self._held(client, queue, claim_id)
        if task is None:
            return outcome
        await client.lpush(done_queue, task)
        return await self._finish(queue, claim_id, "done", None, [])

    async def _held(
        self, client: AsyncRedisCluster, queue: TodoQueue, claim_id: str
    ) -> tuple[bytes | None, Outcome]:
        """The task of a claim held now; else None and why not (as finish.lua says)."""
        claim = await client.hget(claims_key(queue.name), claim_id)
        if claim is None:
            return None, Outcome.UNKNOWN
        deadline = await client.zscore(deadlines_key(queue.name), claim_id)
        raw = claim if isinstance(claim, bytes) else claim.encode()
        _, mark, task = raw.split(b":", 2)
        if mark == b"r" or (deadline is not None and deadline <= _now_ms()):
            return None, Outcome.EXPIRED
        return task, Outcome.OK

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
        return _outcome(await self._arun("finish", queue, keys, args + extra))

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
        args = [claim_id, _now_ms(), timeout_ms, mode]
        result = int(await self._arun("extend", queue, keys, args))
        return _outcome(min(result, 1)), result

    async def retry_now(self, queue: TodoQueue, claim_id: str) -> Outcome:
        keys, args = self._requeue_call(queue, "one", claim_id)
        expired, retried = await self._arun("requeue", queue, keys, args)
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
        expired, retried = self._run("requeue", queue, *self._requeue_call(queue, mode, what))
        return int(expired), int(retried)

    def _requeue_call(self, queue: TodoQueue, mode: str, what: str) -> tuple[list[str], list[Any]]:
        keys = [queue.name, claims_key(queue.name), deadlines_key(queue.name)]
        keys += [queue.set] if queue.set else []
        now_ms = _now_ms()
        return keys, [now_ms, mode, what, "1" if queue.set else "0", f"{now_ms / 1000:.6f}"]

    def lengths(self, queue: TodoQueue) -> QueueLengths:
        """The lengths of the queue, its claims, its failed list, its dedup set and its
        delayed tasks, in one round trip (on a cluster, one per master asked)."""
        pipe = self._sync.get().pipeline(transaction=False)
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


class Pushed(NamedTuple):
    """What a batch into several queues did: the events pushed per queue, and the
    queues whose push was refused or lost, with the error."""

    queued: dict[str, int]
    refused: dict[str, BaseException]


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
