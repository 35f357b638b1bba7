"""Fetching on an event loop: what a watcher's rules fetch with, many events in flight
on one thread.

The same fetches as resc.fetch.client's Fetcher (retries, Retry-After, the circuit
breaker, the size cap, same-origin redirects, timeouts, the counts per rule, messages
that name the request without its secrets), sent with resc.fetch.http1: measured in
the bench (fetch_client, 64 requests in flight), httpx's AsyncClient spent about 1,800
µs of CPU per request, aiohttp about 80 µs, http1 about a quarter of aiohttp's.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Mapping
from urllib.parse import quote, urljoin

import httpx

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
from resc.fetch.http1 import Http1Client, HttpError, target_of
from resc.fetch.request import Request, build_request
from resc.fetch.retry import backoff_delay_s, retry_after_s, retryable_status

# How often a wait before a retry looks at `stop`, which another thread sets.
_STOP_POLL_S = 0.05
# Kept as they are in a URL; anything else (non-ASCII text of the config, spaces) is
# percent-encoded as UTF-8, as httpx does. Values from events are encoded already.
_URL_SAFE = "!#$%&'()*+,-./:;=?@[]_~"
# A character that quote() would change: most URLs have none, and need no quoting.
_UNSAFE = re.compile(r"[^A-Za-z0-9!#$%&'()*+,\-./:;=?@\[\]_~]")
_REDIRECTS = {301, 302, 303, 307, 308}


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
        self._http: Http1Client | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _client(self) -> Http1Client:
        if self._http is None:
            self._http = Http1Client(self._max_connections, HEADERS)
        return self._http

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
        url = request.url
        if _UNSAFE.search(url):
            url = quote(url, safe=_URL_SAFE)
        try:
            target = target_of(url)
        except HttpError as exc:
            raise _NotSent(f"{request.shown}: {exc.name}: {exc}") from None
        method, body, headers = request.method, request.body, request.headers
        client = self._client()
        for _ in range(MAX_REDIRECTS + 1):
            try:
                answer = await client.request(
                    method, target, headers, body, fetch.timeout, fetch.max_response_bytes
                )
            except HttpError as exc:
                if exc.name == "ReadTimeout":
                    raise _Retryable(f"no answer within {fetch.timeout:g} s") from None
                if exc.retryable:
                    raise _Retryable(f"{exc.name}: {exc}") from None
                if exc.name == "TooLarge":
                    raise FetchError(f"{request.shown}: {exc}") from None
                raise FetchError(f"{request.shown}: {exc.name}: {exc}") from None
            status = answer.status
            location = answer.headers.get("location")
            if status in _REDIRECTS and location is not None:
                following = urljoin(url, quote(location, safe=_URL_SAFE))
                first, then = httpx.URL(url), httpx.URL(following)
                if not _same_origin(first, then):
                    raise FetchError(
                        f"{request.shown}: HTTP {status} redirects to another origin "
                        f"({_origin_of(then)}): not followed, so that the fetch's "
                        f"headers are not sent there"
                    )
                try:
                    target = target_of(following)
                except HttpError as exc:
                    raise FetchError(
                        f"{request.shown}: HTTP {status} redirects to a URL that cannot be "
                        f"requested: {exc.name}: {exc}"
                    ) from None
                if status == 303 or (status in (301, 302) and method == "POST"):
                    method, body = "GET", None
                url = following
                continue
            problem = f"HTTP {status} {answer.reason}".rstrip()
            if retryable_status(status):
                raise _Retryable(problem, retry_after_s(answer.headers.get("retry-after")))
            if not 200 <= status < 300:
                raise FetchError(f"{request.shown}: {problem}")
            return answer.body
        raise FetchError(f"{request.shown}: more than {MAX_REDIRECTS} redirects")
