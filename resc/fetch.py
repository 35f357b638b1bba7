"""Fetching JSON from web services: the only HTTP code of resc."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import httpx

from resc import __version__
from resc.config import Fetch
from resc.errors import FetchError
from resc.logs import get_logger

log = get_logger("resc.fetch")


_EXPONENT = re.compile(r"e\+?(-?)0*(?=\d)")


def _number_text(text: str) -> str:
    """Render a JSON float the way JSON writes it (1.5, 2.0, 1e-7, 1e20); keep the text of
    one that does not fit a double rather than turning it into inf."""
    value = float(text)
    return _EXPONENT.sub(r"e\1", repr(value)) if math.isfinite(value) else text


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(body: bytes) -> Any:
    """JSON with numbers kept as text (exact, whatever their size). ValueError if invalid."""
    try:
        return json.loads(
            body, parse_int=str, parse_float=_number_text, parse_constant=_reject_constant
        )
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


class Fetcher:
    """Calls web services for fetch rules; one pooled HTTP client per watcher."""

    def __init__(self, transport: httpx.BaseTransport | None = None) -> None:
        self._client = httpx.Client(
            transport=transport,
            follow_redirects=True,
            headers={"user-agent": f"resc/{__version__}", "accept": "application/json"},
        )

    def close(self) -> None:
        self._client.close()

    def __call__(self, fetch: Fetch, url: str) -> list[dict[str, bytes]]:
        body = self._get(url, fetch.timeout)
        try:
            objects = objects_of(parse_json(body))
        except ValueError as exc:
            raise FetchError(f"GET {url}: bad response: {exc}") from None
        log.debug("fetched", url=url, objects=len(objects))
        return [flatten(obj, fetch.returns) for obj in objects]

    def _get(self, url: str, timeout_s: float) -> bytes:
        """The body of a 2xx answer to GET url; FetchError otherwise."""
        try:
            response = self._client.get(url, timeout=timeout_s)
        except httpx.TimeoutException:
            raise FetchError(f"GET {url}: no answer within {timeout_s:g} s") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise FetchError(f"GET {url}: {type(exc).__name__}: {exc}") from None
        if not response.is_success:
            raise FetchError(f"GET {url}: HTTP {response.status_code} {response.reason_phrase}")
        return response.content
