"""The queue API under /v1: produce events into a watcher's input queue (or several
queues in one request), and consume the tasks of a todo queue as promises
(resc.server.claims). Every refusal is a JSON body {"error": "..."} with a 4xx status;
Redis unavailable (a lost connection, a cluster failing over or moving a slot) is 503."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import redis
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisClusterException, SlotNotCoveredError

from resc.config.durations import DURATION_PATTERN, parse_duration_s
from resc.connection.edge import is_transient_reply, reply_text
from resc.core.errors import RescError
from resc.core.logs import get_logger
from resc.server.access import Tokens
from resc.server.claims import Claim, ClaimStore, KeysApart, Outcome, TodoQueue

log = get_logger("resc.http")

POLL_S = 0.1
MAX_WAIT_MS = 60_000
# Longer asks are shortened to these (the answer says the deadline given).
MAX_TIMEOUT_MS = 7 * 24 * 3_600_000
DEFAULT_REASON = "failed through the HTTP API"
TAG_PRODUCE, TAG_CONSUME = "produce", "consume"
# What a call to Redis may raise: redis-py's errors, the refusals of its cluster client
# (which are no RedisError), and resc's own (KeysApart).
STORE_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException, RescError)


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


class Error(BaseModel):
    error: str = Field(description="what was refused, and why")


class Queued(BaseModel):
    queued: int = Field(description="events pushed")


class BatchQueued(BaseModel):
    queued: int = Field(description="events pushed, in all")
    queues: dict[str, int] = Field(description="events pushed, per queue")


class Promise(BaseModel):
    id: str = Field(description="the claim id, for done, fail, retry and extend")
    task: str
    queue: str
    deadline: str = Field(description="when the claim ends unless kept, RFC 3339, UTC")
    attempt: int = Field(description="times this task was claimed, this claim included")


class Deadline(BaseModel):
    id: str
    deadline: str


class Finished(BaseModel):
    id: str
    outcome: str = Field(description="done, failed, retried or retry scheduled")


class FailBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(DEFAULT_REASON, min_length=1, max_length=10_000)


class QueueInfo(BaseModel):
    queue: str
    produce: bool = Field(description="whether events may be posted to it")
    consume: bool = Field(description="whether its tasks are handed out as promises")
    length: int
    claims: int | None = None
    failed: int | None = None
    set: int | None = Field(None, description="entries of its dedup set")
    delayed: int | None = Field(
        default=None, description="tasks not due yet (a make's delay or at)"
    )
    next_due: str | None = Field(default=None, description="when the first delayed task is due")


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": Error} for code in (*codes, 401, 403, 503)}


CLAIM_ID = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]


class Api:
    """The /v1 routes over one ClaimStore, and the reaper that puts back claims past
    their deadline (start() and close())."""

    def __init__(
        self,
        store: ClaimStore,
        produce: frozenset[str],
        todo: dict[str, TodoQueue],
        tokens: Tokens,
        done_queue: str | None,
        max_body_bytes: int,
        reap_interval_s: float = 1.0,
    ) -> None:
        self.store = store
        self.produce = produce
        self.todo = todo
        self.tokens = tokens
        self.done_queue = done_queue
        self.max_body_bytes = max_body_bytes
        self.reap_interval_s = reap_interval_s
        self.closing = threading.Event()
        self._reaper = threading.Thread(target=self._reap_loop, daemon=True, name="http reaper")

    def start(self) -> None:
        self._reaper.start()

    def close(self) -> None:
        self.closing.set()
        if self._reaper.is_alive():
            self._reaper.join(5)
        self.store.close()

    def _reap_loop(self) -> None:
        failing = False
        refused: set[str] = set()
        while not self.closing.wait(self.reap_interval_s):
            try:
                for queue in self.todo.values():
                    try:
                        expired, retried = self.store.reap(queue)
                    except KeysApart as exc:
                        if queue.name not in refused:
                            log.error("claims reaper: queue refused", error=str(exc))
                            refused.add(queue.name)
                        continue
                    if expired or retried:
                        log.info(
                            "claims put back", queue=queue.name, expired=expired, retried=retried
                        )
                if failing:
                    log.info("claims reaper: Redis is back")
                failing = False
            except STORE_ERRORS as exc:
                if not failing:
                    log.warning("claims reaper: Redis unavailable, retrying", error=str(exc))
                failing = True

    # --- access ----------------------------------------------------------------------

    def _role(self, role: str) -> Callable[[str | None], Awaitable[None]]:
        async def check(authorization: Annotated[str | None, Header()] = None) -> None:
            self._check(role, authorization)

        return check

    def _check(self, role: str, authorization: str | None) -> None:
        if not self.tokens.required(role):
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "a bearer token is needed", {"WWW-Authenticate": "Bearer"})
        if not self.tokens.accepts(role, token.strip()):
            raise ApiError(403, f"this token does not allow {role}")

    def _todo(self, queue: str) -> TodoQueue:
        found = self.todo.get(queue)
        if found is None:
            raise ApiError(404, f"{queue!r} is not a queue whose tasks resc hands out")
        return found

    # --- routes ----------------------------------------------------------------------

    def install(self, app: FastAPI) -> None:
        app.add_exception_handler(ApiError, _api_error)
        for kind in STORE_ERRORS:
            app.add_exception_handler(kind, _redis_error)
        produce_role = [Depends(self._role("produce"))]
        consume_role = [Depends(self._role("consume"))]

        @app.post(
            "/v1/queues/{queue:path}/events",
            status_code=202,
            tags=[TAG_PRODUCE],
            dependencies=produce_role,
            responses=_errors(400, 404, 409, 413, 422),
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {
                        "text/plain": {"schema": {"type": "string"}},
                        "application/json": {
                            "schema": {"type": "array", "items": {"type": "string"}}
                        },
                    },
                }
            },
        )
        async def produce(queue: str, request: Request) -> Queued:
            """Push events: the body is one event as text, or a JSON array of strings
            (Content-Type application/json), pushed in one LPUSH."""
            if queue not in self.produce:
                raise ApiError(404, f"{queue!r} is not a queue resc takes events into")
            events = _events(await self._body(request), request.headers.get("content-type"))
            await self.store.push(queue, events)
            return Queued(queued=len(events))

        @app.post(
            "/v1/events",
            status_code=202,
            tags=[TAG_PRODUCE],
            dependencies=produce_role,
            responses=_errors(400, 404, 409, 413),
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "minProperties": 1,
                                "additionalProperties": {
                                    "type": "array",
                                    "items": {"type": "string"},
                                    "minItems": 1,
                                },
                            }
                        }
                    },
                }
            },
        )
        async def produce_many(request: Request) -> Any:
            """Push events into several queues: the body is a JSON object of queue ->
            array of events. Each queue's events are one LPUSH. On one server the whole
            batch is one transaction; on a Redis Cluster only each queue's push is
            atomic: when a master fails, the queues of the others are pushed, and the
            503 says which were (`queued`) and which not (`not_queued`)."""
            batch = _batch(await self._body(request))
            unknown = [queue for queue in batch if queue not in self.produce]
            if unknown:
                raise ApiError(404, f"{unknown[0]!r} is not a queue resc takes events into")
            pushed = await self.store.push_many(batch)
            if not pushed.refused:
                return BatchQueued(queued=sum(pushed.queued.values()), queues=pushed.queued)
            status, message, headers = store_error(next(iter(pushed.refused.values())))
            return JSONResponse(
                {
                    "error": f"some queues were not pushed: {message}",
                    "queued": pushed.queued,
                    "not_queued": {
                        queue: store_error(exc)[1] for queue, exc in pushed.refused.items()
                    },
                },
                status,
                headers=headers,
            )

        @app.get(
            "/v1/queues/{queue:path}",
            tags=[TAG_CONSUME],
            responses=_errors(404, 409),
        )
        def info(queue: str, authorization: Annotated[str | None, Header()] = None) -> QueueInfo:
            """The lengths of a queue, its claims, its failed list, its dedup set and its
            delayed tasks."""
            todo, produce = self.todo.get(queue), queue in self.produce
            if todo is None and not produce:
                raise ApiError(404, f"{queue!r} is not a queue of the HTTP API")
            self._check("consume" if todo is not None else "produce", authorization)
            if todo is None:
                length = self.store.length(queue)
                return QueueInfo(queue=queue, produce=True, consume=False, length=length, set=None)
            found = self.store.lengths(todo)
            return QueueInfo(
                queue=queue,
                produce=produce,
                consume=True,
                length=found.queue,
                claims=found.claims,
                failed=found.failed,
                set=found.set,
                delayed=found.delayed,
                next_due=None if found.next_due is None else _time(round(found.next_due * 1000)),
            )

        @app.post(
            "/v1/queues/{queue:path}/promises",
            tags=[TAG_CONSUME],
            dependencies=consume_role,
            responses={
                **_errors(404, 409, 422),
                204: {"description": "no task came within `wait`"},
            },
        )
        async def claim(
            queue: str,
            request: Request,
            timeout: Annotated[
                str, Query(description="how long the claim lasts", pattern=DURATION_PATTERN)
            ] = "30s",
            wait: Annotated[
                str, Query(description="how long to wait for a task", pattern=DURATION_PATTERN)
            ] = "0s",
        ) -> Any:
            """Claim the next task: it leaves the queue for `timeout`, unless done, failed,
            retried or extended by then it goes back. 204 when none came within `wait`."""
            todo = self._todo(queue)
            timeout_ms = _duration(timeout, "timeout", 1, MAX_TIMEOUT_MS)
            wait_ms = _duration(wait, "wait", 0, MAX_WAIT_MS)
            until = time.monotonic() + wait_ms / 1000
            while True:
                found = await self.store.claim(todo, timeout_ms)
                if found is not None:
                    return _promise(queue, found)
                if time.monotonic() >= until or self.closing.is_set():
                    return Response(status_code=204)
                await asyncio.sleep(min(POLL_S, max(0.0, until - time.monotonic())))
                if await request.is_disconnected():
                    return Response(status_code=204)

        promise_path = "/v1/queues/{queue:path}/promises/{claim_id}"

        @app.post(
            promise_path + "/done",
            tags=[TAG_CONSUME],
            dependencies=consume_role,
            responses=_errors(404, 409, 422),
        )
        async def done(queue: str, claim_id: CLAIM_ID) -> Finished:
            """The task is done: notified in the done queue, the claim forgotten."""
            outcome = await self.store.done(self._todo(queue), claim_id, self.done_queue)
            return finished(queue, claim_id, outcome, "done")

        @app.post(
            promise_path + "/fail",
            tags=[TAG_CONSUME],
            dependencies=consume_role,
            responses=_errors(404, 409, 422),
        )
        async def fail(queue: str, claim_id: CLAIM_ID, body: FailBody | None = None) -> Finished:
            """The task failed for good: moved to `<queue>/failed` with the reason."""
            reason = body.reason if body is not None else DEFAULT_REASON
            outcome = await self.store.fail(self._todo(queue), claim_id, reason)
            return finished(queue, claim_id, outcome, "failed")

        @app.post(
            promise_path + "/retry",
            tags=[TAG_CONSUME],
            dependencies=consume_role,
            responses=_errors(404, 409, 422),
        )
        async def retry(
            queue: str,
            claim_id: CLAIM_ID,
            delay: Annotated[
                str, Query(description="when to put it back", pattern=DURATION_PATTERN)
            ] = "0s",
        ) -> Finished:
            """Put the task back into its queue, now or after `delay`."""
            todo = self._todo(queue)
            delay_ms = _duration(delay, "delay", 0, MAX_TIMEOUT_MS)
            if delay_ms == 0:
                outcome = await self.store.retry_now(todo, claim_id)
                return finished(queue, claim_id, outcome, "retried")
            outcome, _ = await self.store.retry_later(todo, claim_id, delay_ms)
            return finished(queue, claim_id, outcome, "retry scheduled")

        @app.post(
            promise_path + "/extend",
            tags=[TAG_CONSUME],
            dependencies=consume_role,
            responses=_errors(404, 409, 422),
        )
        async def extend(
            queue: str,
            claim_id: CLAIM_ID,
            timeout: Annotated[
                str, Query(description="the claim's new time left", pattern=DURATION_PATTERN)
            ] = "30s",
        ) -> Deadline:
            """Keep the claim for `timeout` from now."""
            timeout_ms = _duration(timeout, "timeout", 1, MAX_TIMEOUT_MS)
            outcome, deadline_ms = await self.store.extend(self._todo(queue), claim_id, timeout_ms)
            finished(queue, claim_id, outcome, "extended")
            return Deadline(id=claim_id, deadline=_time(deadline_ms))

    async def _body(self, request: Request) -> bytes:
        limit = self.max_body_bytes
        body = await bounded_body(request, limit)
        if body is None:
            raise ApiError(413, f"the body is larger than {limit} bytes (http.max_body_bytes)")
        return body


async def bounded_body(request: Request, limit: int) -> bytes | None:
    """The request's body; None when it is larger than `limit` bytes, by its
    Content-Length or as it is read (a chunked body is cut off there)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def finished(queue: str, claim_id: str, outcome: Outcome, what: str) -> Finished:
    """The answer to done, fail, retry or extend; ApiError 409 when the claim is not held."""
    if outcome is Outcome.UNKNOWN:
        raise ApiError(409, f"no claim {claim_id} on {queue!r}: unknown, or finished")
    if outcome is Outcome.EXPIRED:
        raise ApiError(
            409,
            f"claim {claim_id} on {queue!r} is no longer held: its deadline passed "
            "or it was retried; the task goes back to the queue",
        )
    return Finished(id=claim_id, outcome=what)


def _events(body: bytes, content_type: str | None) -> list[str]:
    media = (content_type or "").split(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        try:
            events = json.loads(body)
        except (ValueError, RecursionError):
            raise ApiError(400, "the body is not JSON: send a JSON array of strings") from None
        if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
            raise ApiError(400, "a JSON body must be an array of strings, one per event")
        if not events:
            raise ApiError(400, "the JSON array holds no event")
        return events
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "the body is not UTF-8 text") from None
    # A trailing line break is how shells and files end a line, not part of the event.
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise ApiError(400, "the body is empty: send one event as text or a JSON array")
    return [text]


def _batch(body: bytes) -> dict[str, list[str]]:
    try:
        batch = json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError(400, "the body is not JSON: send an object of queue -> events") from None
    if not isinstance(batch, dict) or not batch:
        raise ApiError(400, "the body must be a JSON object of queue -> array of events")
    for queue, events in batch.items():
        if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
            raise ApiError(400, f"{queue!r}: the events must be an array of strings")
        if not events:
            raise ApiError(400, f"{queue!r}: the array holds no event")
    return batch


def _duration(text: str, name: str, low_ms: int, high_ms: int) -> int:
    """Milliseconds, brought within [low_ms, high_ms]; a 422 naming `name` when `text` is
    not a duration."""
    try:
        value_ms = round(parse_duration_s(text) * 1000)
    except ValueError as exc:
        raise ApiError(422, f"{name}: {exc}") from None
    return min(max(value_ms, low_ms), high_ms)


def _time(unix_ms: int) -> str:
    return datetime.fromtimestamp(unix_ms / 1000, UTC).isoformat(timespec="milliseconds")


def _promise(queue: str, claim: Claim) -> Promise:
    return Promise(
        id=claim.id,
        task=claim.task.decode("utf-8", "backslashreplace"),
        queue=queue,
        deadline=_time(claim.deadline_ms),
        attempt=claim.attempt,
    )


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse({"error": str(exc)}, exc.status, headers=exc.headers)


# A client may try again after this long when Redis is unavailable for a moment.
RETRY_AFTER = {"Retry-After": "1"}


def store_error(exc: BaseException) -> tuple[int, str, dict[str, str] | None]:
    """The status, message and headers of the answer to a call to Redis that raised
    `exc` (one of STORE_ERRORS)."""
    if isinstance(exc, KeysApart):
        return 409, str(exc), None
    if isinstance(exc, redis.ResponseError):
        if "WRONGTYPE" in str(exc):
            return 409, f"a key has the wrong type: {exc}", None
        if is_transient_reply(exc):
            return (
                503,
                "Redis cannot run it now (a failover, or the key's slot moving): "
                f"{reply_text(exc)}",
                RETRY_AFTER,
            )
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return 503, f"Redis unavailable: {exc}", RETRY_AFTER
    if isinstance(exc, SlotNotCoveredError):
        return 503, f"the cluster serves no slot of the key now: {exc}", RETRY_AFTER
    if isinstance(exc, RedisClusterException) and "cannot be connected" in str(exc):
        return 503, f"Redis Cluster unavailable: {exc}", RETRY_AFTER
    log.error("Redis refused an API call", error=str(exc))
    return 503, f"Redis refused: {exc}", None


async def _redis_error(request: Request, exc: Exception) -> Response:
    status, message, headers = store_error(exc)
    return JSONResponse({"error": message}, status, headers=headers)
