"""The API's three busiest requests answered without FastAPI's routing, dependency
solving and validation, which cost several times the Redis call itself: an ASGI layer in
front of the app takes a request that will succeed (produce one event or many, claim
without waiting, done) and answers it with the same Redis call and the same body.

Anything else goes on to the app, which answers it as it always does: an unknown queue,
a missing or wrong token, a bad parameter or body, a chunked or oversized body, a claim
that waits. The layer decides with the app's own checks (Api), so the two cannot
disagree; a body it has read is handed on to the app unchanged. Only what happens after
Redis is asked (a refused claim, Redis unavailable) is answered here, by the app's own
functions.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from resc.server.api import (
    MAX_TIMEOUT_MS,
    MAX_WAIT_MS,
    STORE_ERRORS,
    Api,
    ApiError,
    _api_error,
    _duration,
    _events,
    _promise,
    _redis_error,
    finished,
)

PREFIX = "/v1/queues/"
_DONE = re.compile(r"^/v1/queues/(?P<queue>.+)/promises/(?P<id>[0-9a-f]{32})/done$")


class Pass(Exception):
    """Not for the fast path: the app answers."""


class FastPaths:
    """ASGI app: produce, claim (wait 0) and done straight to Redis, the rest to `app`."""

    def __init__(self, app: FastAPI, api: Api) -> None:
        self.app = app
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            return await self.app(scope, receive, send)
        path: str = scope["path"]
        if not path.startswith(PREFIX):
            return await self.app(scope, receive, send)
        try:
            if path.endswith("/events"):
                return await self._produce(
                    path[len(PREFIX) : -len("/events")], scope, receive, send
                )
            if path.endswith("/promises"):
                return await self._claim(path[len(PREFIX) : -len("/promises")], scope, send)
            if path.endswith("/done") and (found := _DONE.match(path)):
                return await self._done(found["queue"], found["id"], scope, send)
        except Pass:
            pass
        return await self.app(scope, receive, send)

    # --- the three paths ---------------------------------------------------------------

    async def _produce(self, queue: str, scope: Scope, receive: Receive, send: Send) -> None:
        api = self.api
        if queue not in api.produce:
            raise Pass
        headers = _headers(scope)
        self._allow("produce", headers)
        declared = headers.get(b"content-length", b"")
        if not declared.isdigit() or int(declared) > api.max_body_bytes:
            raise Pass  # chunked, or too large: the app reads it and says so
        body, more = await _read(receive, int(declared))
        if more:
            return await self.app(scope, _replay(body, True, receive), send)
        content_type = headers.get(b"content-type")
        try:
            events = _events(body, content_type.decode("latin-1") if content_type else None)
        except ApiError:
            return await self.app(scope, _replay(body, False, receive), send)
        try:
            await api.store.push(queue, events)
        except STORE_ERRORS as exc:
            return await _answer(await _redis_error(Request(scope), exc), scope, send)
        await _answer(JSONResponse({"queued": len(events)}, 202), scope, send)

    async def _claim(self, queue: str, scope: Scope, send: Send) -> None:
        api = self.api
        todo = api.todo.get(queue)
        if todo is None:
            raise Pass
        headers = _headers(scope)
        self._allow("consume", headers)
        _no_body(headers)
        query = dict(_query(scope, {"timeout", "wait"}))
        timeout_ms = _duration_or_pass(query.get("timeout", "30s"), "timeout", 1, MAX_TIMEOUT_MS)
        if _duration_or_pass(query.get("wait", "0s"), "wait", 0, MAX_WAIT_MS) != 0:
            raise Pass  # waiting polls: the app does it
        try:
            found = await api.store.claim(todo, timeout_ms)
        except STORE_ERRORS as exc:
            return await _answer(await _redis_error(Request(scope), exc), scope, send)
        if found is None:
            return await _answer(Response(status_code=204), scope, send)
        await _answer(JSONResponse(_promise(queue, found).model_dump()), scope, send)

    async def _done(self, queue: str, claim_id: str, scope: Scope, send: Send) -> None:
        api = self.api
        todo = api.todo.get(queue)
        if todo is None:
            raise Pass
        headers = _headers(scope)
        self._allow("consume", headers)
        _no_body(headers)
        _query(scope, set())
        try:
            outcome = await api.store.done(todo, claim_id, api.done_queue)
            answer: Response = JSONResponse(finished(queue, claim_id, outcome, "done").model_dump())
        except ApiError as exc:
            answer = await _api_error(Request(scope), exc)
        except STORE_ERRORS as exc:
            answer = await _redis_error(Request(scope), exc)
        await _answer(answer, scope, send)

    def _allow(self, role: str, headers: dict[bytes, bytes]) -> None:
        authorization = headers.get(b"authorization")
        try:
            self.api._check(role, authorization.decode("latin-1") if authorization else None)
        except ApiError:
            raise Pass from None


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """The first value of each header, as Starlette's `headers.get` gives it."""
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        found.setdefault(name, value)
    return found


def _no_body(headers: dict[bytes, bytes]) -> None:
    if b"transfer-encoding" in headers or headers.get(b"content-length", b"0") != b"0":
        raise Pass


def _query(scope: Scope, names: set[str]) -> list[tuple[str, str]]:
    """The query's parameters, each at most once and all among `names`; else Pass."""
    raw: bytes = scope.get("query_string", b"")
    if not raw:
        return []
    try:
        pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise Pass from None
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys) or not set(keys) <= names:
        raise Pass
    return pairs


def _duration_or_pass(text: str, name: str, low_ms: int, high_ms: int) -> int:
    try:
        return _duration(text, name, low_ms, high_ms)
    except ApiError:
        raise Pass from None


async def _read(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The body, up to `limit` bytes and the message that passes it; and whether more
    is to come (then the app reads on)."""
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return body, True
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body, False
        if len(body) > limit:
            return body, True


def _replay(body: bytes, more: bool, receive: Receive) -> Receive:
    """`receive` with `body` (read already) given back first, then the rest, if `more`."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replay


async def _answer(response: Response, scope: Scope, send: Send) -> None:
    async def no_receive() -> Any:  # a Response reads nothing
        raise RuntimeError("a response does not receive")

    await response(scope, no_receive, send)
