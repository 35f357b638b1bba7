"""Fetching on an event loop: what a watcher's rules fetch with, many events in flight
on one thread.

The same fetches as resc.fetch.client's Fetcher (retries, Retry-After, the circuit
breaker, the size cap, same-origin redirects, timeouts, the counts per rule, messages
that name the request without its secrets), sent with aiohttp: measured in the bench
(fetch_client), httpx's AsyncClient spent about 50 times more CPU per request with 64
in flight, aiohttp about 90 µs.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Mapping
from urllib.parse import quote

import aiohttp
import httpx
from yarl import URL

from resc.config.models import Fetch
from resc.core.errors import FetchError, FetchStopped
from resc.core.metrics import FetchStats
from resc.fetch.breaker import CircuitOpen
from resc.fetch.client import (
    HEADERS,
    MAX_REDIRECTS,
    FetchStates,
    _FetchState,
    _NotSent,
    _origin_of,
    _Retryable,
    _same_origin,
    _Unavailable,
    log,
    retry_message,
)
from resc.fetch.request import Request, build_request
from resc.fetch.retry import backoff_delay_s, retry_after_s, retryable_status

# How often a wait before a retry looks at `stop`, which another thread sets.
_STOP_POLL_S = 0.05
# Kept as they are in a URL; anything else (non-ASCII text of the config, spaces) is
# percent-encoded as UTF-8, as httpx does. Values from events are encoded already.
_URL_SAFE = "!#$%&'()*+,-./:;=?@[]_~"
_REDIRECTS = {301, 302, 303, 307, 308}
# The names the threaded Fetcher's messages use for the same failures.
_NAMES = {
    "ClientConnectorError": "ConnectError",
    "ClientConnectorDNSError": "ConnectError",
    "ServerDisconnectedError": "RemoteProtocolError",
    "ClientPayloadError": "RemoteProtocolError",
}


@functools.cache
def _timeout(timeout_s: float) -> aiohttp.ClientTimeout:
    """A fetch's timeouts, made once per value rather than per request."""
    return aiohttp.ClientTimeout(
        total=None, connect=None, sock_connect=timeout_s, sock_read=timeout_s
    )


def _name(exc: BaseException) -> str:
    return _NAMES.get(type(exc).__name__, type(exc).__name__)


class AsyncFetcher(FetchStates):
    """Calls web services for fetch rules from one event loop, with up to
    `max_connections` keep-alive connections in all. Create, call and close it on that
    loop; `keep_only` and `stats` may be called from any thread.

    `stop`, when set, ends the wait before a retry within 50 ms: the fetch then fails
    with FetchStopped. `stats_of`: as for Fetcher.
    """

    def __init__(
        self,
        *,
        stop: threading.Event | None = None,
        max_connections: int = 100,
        stats_of: Callable[[Fetch], FetchStats] | None = None,
    ) -> None:
        super().__init__(stats_of)
        self._stop = stop or threading.Event()
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0),
                headers=HEADERS,
                # The fetch's own timeouts are given per request.
                timeout=aiohttp.ClientTimeout(total=None),
                auto_decompress=True,
                skip_auto_headers=("Content-Type",),
            )
        return self._session

    async def __call__(
        self, fetch: Fetch, variables: Mapping[str, bytes]
    ) -> list[dict[str, bytes]]:
        """The objects of `fetch`'s answer for an event's variables, each as `returns.field`
        variables. MissingVariable or FetchError when the event cannot have them."""
        request = build_request(fetch, variables)
        state = self._state(fetch)
        body, seconds = await self._guarded(state, request)
        return self._objects(state, request, body, seconds)

    async def _guarded(self, state: _FetchState, request: Request) -> tuple[bytes, float]:
        """As Fetcher._guarded: through the fetch's circuit breaker."""
        fetch, breaker = state.fetch, state.breaker
        try:
            trial = breaker.admit()
        except CircuitOpen:
            state.stats.record("circuit_open", None)
            raise
        try:
            answer = await self._send(request, state, 1 if trial else fetch.retries + 1)
        except _Unavailable as exc:
            breaker.failed(trial, str(exc))
            raise FetchError(str(exc)) from None
        except (FetchStopped, _NotSent):
            breaker.abandoned(trial)
            raise
        except FetchError:
            breaker.answered(trial)
            raise
        except BaseException:
            breaker.abandoned(trial)
            raise
        breaker.answered(trial)
        return answer

    async def _send(
        self, request: Request, state: _FetchState, attempts: int
    ) -> tuple[bytes, float]:
        loop = asyncio.get_running_loop()
        attempt = 1
        while True:
            started = loop.time()
            try:
                body = await self._attempt(request, state.fetch)
            except _Retryable as exc:
                state.stats.record("retryable_error", loop.time() - started)
                if attempt >= attempts:
                    raise _Unavailable(retry_message(request, exc.problem, attempts)) from None
                delay_s = exc.retry_after_s
                if delay_s is None:
                    delay_s = backoff_delay_s(attempt - 1, state.fetch.backoff)
                log.info(
                    "fetch failed, retrying",
                    request=request.shown,
                    error=exc.problem,
                    attempt=attempt,
                    retry_in_s=round(delay_s, 3),
                )
                if await self._stopped_within(delay_s):
                    raise FetchStopped(
                        f"{request.shown}: {exc.problem}; stopped while waiting to retry"
                    ) from None
                attempt += 1
                continue
            except _NotSent:
                state.stats.record("not_sent", loop.time() - started)
                raise
            except BaseException:
                state.stats.record("failed", loop.time() - started)
                raise
            return body, loop.time() - started

    async def _stopped_within(self, delay_s: float) -> bool:
        loop = asyncio.get_running_loop()
        until = loop.time() + delay_s
        while not self._stop.is_set():
            left = until - loop.time()
            if left <= 0:
                return False
            await asyncio.sleep(min(left, _STOP_POLL_S))
        return True

    async def _attempt(self, request: Request, fetch: Fetch) -> bytes:
        """One request: the body of a 2xx answer; _Retryable or FetchError otherwise."""
        timeout = _timeout(fetch.timeout)
        try:
            url = URL(quote(request.url, safe=_URL_SAFE), encoded=True)
        except ValueError as exc:
            raise _NotSent(f"{request.shown}: InvalidURL: {exc}") from None
        if url.scheme not in ("http", "https"):
            raise _NotSent(
                f"{request.shown}: UnsupportedProtocol: Request URL has an unsupported "
                f"protocol '{url.scheme}://'."
            )
        headers = (
            {k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers.items()}
            if request.headers
            else None
        )
        method, body = request.method, request.body
        try:
            for _ in range(MAX_REDIRECTS + 1):
                async with self._client().request(
                    method,
                    url,
                    headers=headers,
                    data=body,
                    timeout=timeout,
                    allow_redirects=False,
                ) as response:
                    status = response.status
                    location = response.headers.get("location")
                    if status in _REDIRECTS and location is not None:
                        following = url.join(URL(location))
                        first, then = httpx.URL(str(url)), httpx.URL(str(following))
                        if not _same_origin(first, then):
                            raise FetchError(
                                f"{request.shown}: HTTP {status} redirects to another origin "
                                f"({_origin_of(then)}): not followed, so that the fetch's "
                                f"headers are not sent there"
                            )
                        if status == 303 or (status in (301, 302) and method == "POST"):
                            method, body = ("GET" if method != "HEAD" else method), None
                        url = following
                        continue
                    problem = f"HTTP {status} {response.reason}"
                    if retryable_status(status):
                        raise _Retryable(
                            problem, retry_after_s(response.headers.get("retry-after"))
                        )
                    if not 200 <= status < 300:
                        raise FetchError(f"{request.shown}: {problem}")
                    return await _read(response, fetch.max_response_bytes, request.shown)
            raise FetchError(f"{request.shown}: more than {MAX_REDIRECTS} redirects")
        except TimeoutError:
            raise _Retryable(f"no answer within {fetch.timeout:g} s") from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise _Retryable(f"{_name(exc)}: {exc}") from None
        except (aiohttp.InvalidURL, ValueError) as exc:
            raise _NotSent(f"{request.shown}: {_name(exc)}: {exc}") from None
        except aiohttp.ClientError as exc:  # the service answered: bad gzip, bad headers
            raise FetchError(f"{request.shown}: {_name(exc)}: {exc}") from None


async def _read(response: aiohttp.ClientResponse, limit: int, shown: str) -> bytes:
    """As client._read: the body, counted while read, failing past `limit` bytes."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise FetchError(
            f"{shown}: the answer has {declared} bytes, more than max_response_bytes ({limit})"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise FetchError(
                f"{shown}: the answer is larger than max_response_bytes ({limit} bytes)"
            )
        chunks.append(chunk)
    return b"".join(chunks)
