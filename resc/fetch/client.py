"""Fetching JSON from web services: the only HTTP code of resc.

A fetch's request is built from the event's variables (resc.fetch.request), sent with
retries on failures that may pass (no connection, timeouts, HTTP 429 and 5xx; other
answers fail at once), behind a circuit breaker (resc.fetch.breaker), read up to a size
cap, and its objects turned into variables. Every failure is a FetchError whose message
becomes the event's reason in the failed queue.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import httpx

from resc import __version__
from resc.config.models import Fetch
from resc.core.errors import FetchError, FetchStopped
from resc.core.logs import get_logger
from resc.core.metrics import FetchStats
from resc.fetch.breaker import CircuitBreaker, CircuitOpen
from resc.fetch.request import Request, build_request
from resc.fetch.retry import backoff_delay_s, retry_after_s, retryable_status

log = get_logger("resc.fetch")
_debug_log = logging.getLogger("resc.fetch")

# Redirects followed in one attempt, as many as httpx follows by default.
MAX_REDIRECTS = 20
HEADERS = {"user-agent": f"resc/{__version__}", "accept": "application/json"}


_EXPONENT = re.compile(r"e\+?(-?)0*(?=\d)")


def _number_text(text: str) -> str:
    """Render a JSON float the way JSON writes it (1.5, 2.0, 1e-7, 1e20); keep the text of
    one that does not fit a double rather than turning it into inf."""
    value = float(text)
    return _EXPONENT.sub(r"e\1", repr(value)) if math.isfinite(value) else text


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# Made once: json.loads with hooks makes a decoder for every call.
_DECODER = json.JSONDecoder(
    parse_int=str, parse_float=_number_text, parse_constant=_reject_constant
)


def parse_json(body: bytes) -> Any:
    """JSON with numbers kept as text (exact, whatever their size). ValueError if invalid.
    The bytes are decoded as json.loads decodes them (UTF-8, 16 or 32)."""
    try:
        return _DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _render(value: Any) -> bytes | None:
    if isinstance(value, str):
        return value.encode("utf-8")
    if value is True:
        return b"true"
    if value is False:
        return b"false"
    if value is None:
        return b"null"
    return None


def flatten(obj: dict[str, Any], namespace: str) -> dict[str, bytes]:
    """An object's fields as variables: `ns.field`, `ns.nested.field`. Arrays are skipped."""
    out: dict[str, bytes] = {}
    stack = [(namespace, obj)]
    while stack:
        prefix, current = stack.pop()
        for key, value in current.items():
            name = f"{prefix}.{key}"
            if isinstance(value, dict):
                stack.append((name, value))
                continue
            rendered = _render(value)
            if rendered is not None:
                out[name] = rendered
    return out


def objects_of(data: Any) -> list[dict[str, Any]]:
    """The objects of a response: an object, or an array of objects."""
    if isinstance(data, dict):
        return [data]
    if isinstance(data, list) and all(isinstance(item, dict) for item in data):
        return data
    raise ValueError("expected a JSON object or an array of objects")


def pick(data: Any, path: str | None) -> Any:
    """The value at `path` (object fields separated by dots: `data.children`) of an answer;
    the answer itself when path is None. ValueError when there is no such value."""
    if path is None:
        return data
    walked = "the answer"
    for key in path.split("."):
        if not isinstance(data, dict):
            raise ValueError(f"path {path}: {walked} is not an object")
        if key not in data:
            raise ValueError(f"path {path}: {walked} has no field {key!r}")
        data = data[key]
        walked = key if walked == "the answer" else f"{walked}.{key}"
    return data


class _Retryable(Exception):
    """One attempt failed in a way a later attempt may not."""

    def __init__(self, problem: str, retry_after_s: float | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.retry_after_s = retry_after_s


class _Unavailable(Exception):
    """Every attempt failed in a way that retrying could have cured: counts against the
    circuit breaker."""


class _NotSent(FetchError):
    """The request could not be made (a bad URL or header value): tells nothing about the
    service, so the circuit breaker ignores it."""


def _read(response: httpx.Response, limit: int, shown: str) -> bytes:
    """The body, read while counting bytes: an answer larger than `limit` fails before it
    is in memory, whether or not it declares its Content-Length."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise FetchError(
            f"{shown}: the answer has {declared} bytes, more than max_response_bytes ({limit})"
        )
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise FetchError(
                f"{shown}: the answer is larger than max_response_bytes ({limit} bytes)"
            )
        chunks.append(chunk)
    return b"".join(chunks)


class _FetchState(NamedTuple):
    """What a Fetcher keeps per fetch: its circuit breaker and its request counts."""

    fetch: Fetch
    breaker: CircuitBreaker
    stats: FetchStats


class FetchStates:
    """What both fetchers keep per fetch (its circuit breaker and its request counts),
    and what they do with an answer once its body is read."""

    def __init__(self, stats_of: Callable[[Fetch], FetchStats] | None = None) -> None:
        self._stats_of = stats_of or (lambda _: FetchStats())
        self._lock = threading.Lock()
        # Keyed by id(): the Fetch is kept in the value, so its id cannot be reused.
        self._states: dict[int, _FetchState] = {}

    def _state(self, fetch: Fetch) -> _FetchState:
        with self._lock:
            state = self._states.get(id(fetch))
            if state is None:
                breaker = CircuitBreaker(
                    str(fetch.url), fetch.breaker.failures, fetch.breaker.cooldown
                )
                stats = self._stats_of(fetch)
                state = self._states[id(fetch)] = _FetchState(fetch, breaker, stats)
            return state

    def keep_only(self, fetches: Iterable[Fetch]) -> None:
        """Forget the breakers of fetches no longer configured (a reload), and the counts
        they were given by `stats_of` (which may keep them)."""
        kept = {id(fetch) for fetch in fetches}
        with self._lock:
            self._states = {key: s for key, s in self._states.items() if key in kept}

    def stats(self) -> list[tuple[Fetch, FetchStats]]:
        """The counts of each fetch known (the FetchStats `stats_of` gave it)."""
        with self._lock:
            return [(state.fetch, state.stats) for state in self._states.values()]

    @staticmethod
    def _objects(
        state: _FetchState, request: Request, body: bytes, seconds: float
    ) -> list[dict[str, bytes]]:
        """The objects of a 2xx answer's body as variables, counted as "ok" or, when the
        answer is not usable, "failed"."""
        fetch = state.fetch
        outcome = "failed"
        try:
            objects = objects_of(pick(parse_json(body), fetch.path))
        except ValueError as exc:
            raise FetchError(f"{request.shown}: bad response: {exc}") from None
        else:
            if len(objects) > fetch.max_results:
                # Failing, not truncating: dropped objects would be tasks silently lost.
                raise FetchError(
                    f"{request.shown}: the answer has {len(objects)} objects, more than "
                    f"max_results ({fetch.max_results})"
                )
            outcome = "ok"
        finally:
            state.stats.record(outcome, seconds)
        if _debug_log.isEnabledFor(logging.DEBUG):
            log.debug("fetched", request=request.shown, objects=len(objects))
        return [flatten(obj, fetch.returns) for obj in objects]


def retry_message(request: Request, problem: str, attempts: int) -> str:
    after = f" (after {attempts} attempts)" if attempts > 1 else ""
    return f"{request.shown}: {problem}{after}"


class Fetcher(FetchStates):
    """Calls web services for fetch rules, from threads: one pooled HTTP client and one
    circuit breaker per fetch. Safe to call from several threads. (A watcher fetches on
    an event loop instead: resc.fetch.aio.)

    `stop`, when set, ends the wait before a retry at once: the fetch then fails with
    FetchStopped. `stats_of` gives the FetchStats each fetch's requests are counted in
    (by default, one of its own per fetch).
    """

    def __init__(
        self,
        transport: httpx.BaseTransport | None = None,
        *,
        stop: threading.Event | None = None,
        concurrency: int = 1,
        stats_of: Callable[[Fetch], FetchStats] | None = None,
    ) -> None:
        super().__init__(stats_of)
        self._client = httpx.Client(
            transport=transport,
            # As many connections as requests can be made at once, so that none waits
            # for a free connection (which would count as a timeout).
            limits=httpx.Limits(max_connections=max(100, concurrency)),
            # Followed by _redirected, only to the same origin.
            follow_redirects=False,
            headers=HEADERS,
        )
        self._stop = stop or threading.Event()

    def close(self) -> None:
        self._client.close()

    def __call__(self, fetch: Fetch, variables: Mapping[str, bytes]) -> list[dict[str, bytes]]:
        """The objects of `fetch`'s answer for an event's variables, each as `returns.field`
        variables. MissingVariable or FetchError when the event cannot have them."""
        request = build_request(fetch, variables)
        state = self._state(fetch)
        body, seconds = self._guarded(state, request)
        return self._objects(state, request, body, seconds)

    def _guarded(self, state: _FetchState, request: Request) -> tuple[bytes, float]:
        """The body of a 2xx answer and the seconds it took (not counted yet), through the
        fetch's circuit breaker."""
        fetch, breaker = state.fetch, state.breaker
        try:
            trial = breaker.admit()
        except CircuitOpen:
            state.stats.record("circuit_open", None)
            raise
        try:
            answer = self._send(request, state, attempts=1 if trial else fetch.retries + 1)
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

    def _send(self, request: Request, state: _FetchState, attempts: int) -> tuple[bytes, float]:
        fetch = state.fetch
        attempt = 1
        while True:
            try:
                return self._timed_attempt(request, state)
            except _Retryable as exc:
                if attempt >= attempts:
                    raise _Unavailable(retry_message(request, exc.problem, attempts)) from None
                delay_s = exc.retry_after_s
                if delay_s is None:
                    delay_s = backoff_delay_s(attempt - 1, fetch.backoff)
                log.info(
                    "fetch failed, retrying",
                    request=request.shown,
                    error=exc.problem,
                    attempt=attempt,
                    retry_in_s=round(delay_s, 3),
                )
                if self._stop.wait(delay_s):
                    raise FetchStopped(
                        f"{request.shown}: {exc.problem}; stopped while waiting to retry"
                    ) from None
                attempt += 1

    def _timed_attempt(self, request: Request, state: _FetchState) -> tuple[bytes, float]:
        """_attempt, timed; a failed attempt is counted by outcome for the metrics, and a
        2xx answer is left to the caller to count once its body is checked."""
        started = time.monotonic()
        try:
            return self._attempt(request, state.fetch), time.monotonic() - started
        except _Retryable:
            state.stats.record("retryable_error", time.monotonic() - started)
            raise
        except _NotSent:
            state.stats.record("not_sent", time.monotonic() - started)
            raise
        except BaseException:
            state.stats.record("failed", time.monotonic() - started)
            raise

    def _attempt(self, request: Request, fetch: Fetch) -> bytes:
        """One request: the body of a 2xx answer; _Retryable or FetchError otherwise."""
        try:
            sent = self._client.build_request(
                request.method,
                request.url,
                headers=request.headers,
                content=request.body,
                timeout=fetch.timeout,
            )
            response = self._client.send(sent, stream=True)
            try:
                response = self._redirected(response, request.shown)
                problem = f"HTTP {response.status_code} {response.reason_phrase}"
                if retryable_status(response.status_code):
                    raise _Retryable(problem, retry_after_s(response.headers.get("retry-after")))
                if not response.is_success:
                    raise FetchError(f"{request.shown}: {problem}")
                return _read(response, fetch.max_response_bytes, request.shown)
            finally:
                response.close()
        except httpx.TimeoutException:
            raise _Retryable(f"no answer within {fetch.timeout:g} s") from None
        except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError) as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:
            raise _NotSent(f"{request.shown}: {type(exc).__name__}: {exc}") from None
        except httpx.HTTPError as exc:  # the service answered: bad gzip
            raise FetchError(f"{request.shown}: {type(exc).__name__}: {exc}") from None

    def _redirected(self, response: httpx.Response, shown: str) -> httpx.Response:
        """The answer at the end of the redirects from `response`, which only stay on the
        first request's origin: its headers come from the config (tokens, API keys) and
        must not reach another host, so a redirect elsewhere fails the fetch instead."""
        origin = response.request.url
        for _ in range(MAX_REDIRECTS):
            following = response.next_request
            if following is None:
                return response
            response.close()
            if not _same_origin(origin, following.url):
                raise FetchError(
                    f"{shown}: HTTP {response.status_code} redirects to another origin "
                    f"({_origin_of(following.url)}): not followed, so that the fetch's "
                    f"headers are not sent there"
                )
            response = self._client.send(following, stream=True)
        response.close()
        raise FetchError(f"{shown}: more than {MAX_REDIRECTS} redirects")


def _origin_of(url: httpx.URL) -> str:
    default = {"http": 80, "https": 443}.get(url.scheme)
    port = "" if url.port in (None, default) else f":{url.port}"
    return f"{url.scheme}://{url.host}{port}"


def _same_origin(first: httpx.URL, then: httpx.URL) -> bool:
    """Same scheme, host and port; or the same host moved from http to https (a secure
    upgrade, as httpx itself allows for Authorization)."""
    if _origin_of(first) == _origin_of(then):
        return True
    return (
        first.scheme == "http"
        and then.scheme == "https"
        and first.host == then.host
        and first.port in (None, 80)
        and then.port in (None, 443)
    )
