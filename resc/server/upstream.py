"""An ASGI layer that answers some paths with its own app and hands every other request
to an upstream HTTP server on a Unix socket: how the API's process passes /metrics,
/livez, /readyz and the dashboard on to the daemon that owns them.

A request is read whole (up to a bound) and its response is sent back whole: those paths
answer small bodies, and nothing on them streams."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

# Headers of one connection, not of the request: never passed on.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
    }
)
# What the upstream may take to answer (the dashboard's history is the slowest).
TIMEOUT_S = 30.0


class Upstream:
    """ASGI app: paths for which `local(path)` holds go to `app`, the others to the
    server listening on the Unix socket `socket_path`."""

    def __init__(
        self,
        app: ASGIApp,
        local: Callable[[str], bool],
        socket_path: str,
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self.local = local
        self.max_body_bytes = max_body_bytes
        self.client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=socket_path),
            base_url="http://resc",
            timeout=TIMEOUT_S,
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.local(scope["path"]):
            return await self.app(scope, receive, send)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                return await _answer(send, 413, {"error": "request body too large"})
            if not message.get("more_body", False):
                break
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP_BY_HOP]
        try:
            response = await self.client.request(
                scope["method"], target.decode("latin-1"), headers=headers, content=bytes(body)
            )
            content = await response.aread()
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            return await _answer(send, 502, {"error": f"the daemon did not answer: {reason}"})
        # httpx has decoded the body: its encoding no longer applies.
        passed = [
            (k, v)
            for k, v in response.headers.raw
            if k.lower() not in _HOP_BY_HOP and k.lower() != b"content-encoding"
        ]
        passed.append((b"content-length", str(len(content)).encode()))
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": passed}
        )
        await send({"type": "http.response.body", "body": content})


async def _answer(send: Send, status: int, body: dict[str, str]) -> None:
    raw = json.dumps(body).encode() + b"\n"
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": raw})
