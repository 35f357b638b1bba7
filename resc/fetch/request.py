"""A fetch's request, built from an event's variables: URL, headers and JSON body. Pure
but for reading environment variables; no HTTP here (that is resc.fetch.client).

How values are inserted:
- url: event values percent-encoded (a `/` or `?` in an event cannot change the URL's
  path or query), and the dots of a value made only of dots too (`..` -> `%2E%2E`):
  `.` is left as it is by percent-encoding, and a path segment `..` or `.` would be
  removed with the one before it, sending the request to another endpoint.
  `${env.NAME}` values as they are, since the operator sets them and may put a base
  URL there.
- headers: values as they are; a value that is not a valid header value (a line break
  would split the header) fails the event, with a message that does not show it.
- body: every value escaped as inside a JSON string (`"` -> `\\"`, line breaks -> `\\n`),
  without adding quotes; the expanded body must then be valid JSON. So write string
  values in quotes (`{"id": "${id}"}`) and numbers without (`{"n": ${n}}`): a value
  that is not a number there makes the body invalid and fails the event, it can never
  add fields.
Messages show the URL with `${env.NAME}` left unexpanded, so that secrets never reach
the logs or the failed queue's reasons.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from urllib.parse import quote

from resc.config.models import ENV_PREFIX, Fetch
from resc.config.patterns import Pattern
from resc.core.errors import FetchError

# RFC 9110's field-value: visible characters, with spaces or tabs only between them.
_HEADER_VALUE = re.compile(rb"(?:[\x21-\x7e\x80-\xff]+(?:[ \t]+[\x21-\x7e\x80-\xff]+)*)?")


class Request:
    """What to send: `shown` names the request in messages (method and URL, secrets
    unexpanded), worked out only when a message needs it."""

    __slots__ = ("_fetch", "_shown", "_variables", "body", "headers", "method", "url")

    def __init__(
        self,
        fetch: Fetch,
        variables: Mapping[str, bytes],
        url: str,
        headers: dict[bytes, bytes],
        body: bytes | None,
    ) -> None:
        self.method = fetch.method
        self.url = url
        self.headers = headers
        self.body = body
        self._fetch = fetch
        self._variables = variables
        self._shown: str | None = None

    @property
    def shown(self) -> str:
        if self._shown is None:
            self._shown = f"{self._fetch.method} {shown_url(self._fetch, self._variables)}"
        return self._shown


def _is_env(name: str) -> bool:
    return name.startswith(ENV_PREFIX)


def _url_value(value: bytes) -> bytes:
    """An event value as it goes into a URL. A dot segment made by a value can only be
    made of values that are all dots, so encoding those leaves `a.txt` as it is."""
    if value and not value.strip(b"."):
        return b"%2E" * len(value)
    return quote(value, safe="").encode("ascii")


def _quoted(pattern: Pattern, variables: Mapping[str, bytes]) -> dict[str, bytes]:
    return {
        name: _url_value(variables[name])
        for name in pattern.refs
        if name in variables and not _is_env(name)
    }


def shown_url(fetch: Fetch, variables: Mapping[str, bytes]) -> str:
    """The URL for messages: event values expanded (percent-encoded), `${env.NAME}`
    left as it is. MissingVariable when an event value is missing."""
    unexpanded = {name: f"${{{name}}}".encode() for name in fetch.url.refs if _is_env(name)}
    return fetch.url.expand({**_quoted(fetch.url, variables), **unexpanded}).decode("utf-8")


def build_request(fetch: Fetch, variables: Mapping[str, bytes]) -> Request:
    """The request of `fetch` for an event's variables.

    MissingVariable when a pattern names an event variable with no value; FetchError
    when an environment variable is not set, a header value has a line break, or the
    body is not JSON once expanded.
    """
    quoted = _quoted(fetch.url, variables)
    env: dict[str, bytes] = {}
    if fetch.env_names:
        # A missing event value in the URL is a MissingVariable before anything else.
        shown = f"{fetch.method} {shown_url(fetch, variables)}"
        env = _environment(fetch, shown)
        quoted.update(env)
    # MissingVariable when an event value is missing.
    url = fetch.url.expand(quoted).decode("utf-8")
    headers: dict[bytes, bytes] = {}
    request = Request(fetch, variables, url, headers, None)
    for name, pattern in fetch.headers.items():
        value = pattern.expand({**variables, **env})
        if not _HEADER_VALUE.fullmatch(value):
            # Checked here, not left to the HTTP client, whose message would show the
            # value: maybe a token, on its way to the failed queue's reasons.
            raise FetchError(
                f"{request.shown}: the value of header {name} is not a valid header value "
                f"(control characters, line breaks or spaces at either end)"
            )
        headers[name.encode("ascii")] = value
    if fetch.body is not None:
        request.body = _json_body(fetch.body, {**variables, **env}, request.shown)
        if not any(name.lower() == b"content-type" for name in headers):
            headers[b"content-type"] = b"application/json"
    return request


def _environment(fetch: Fetch, shown: str) -> dict[str, bytes]:
    """The `env.NAME` variables the fetch's patterns use, read now."""
    env: dict[str, bytes] = {}
    for name in fetch.env_names:
        value = os.environ.get(name.removeprefix(ENV_PREFIX))
        if value is None:
            raise FetchError(
                f"{shown}: environment variable {name.removeprefix(ENV_PREFIX)} is not set "
                f"(used as ${{{name}}})"
            )
        env[name] = os.fsencode(value)
    return env


def _json_escaped(name: str, value: bytes, shown: str) -> bytes:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise FetchError(f"{shown}: the value of ${{{name}}} is not UTF-8 text") from None
    return json.dumps(text, ensure_ascii=False)[1:-1].encode("utf-8")


def _json_body(pattern: Pattern, variables: Mapping[str, bytes], shown: str) -> bytes:
    escaped = {
        name: _json_escaped(name, variables[name], shown)
        for name in pattern.refs
        if name in variables
    }
    body = pattern.expand(escaped)
    try:
        json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise FetchError(f"{shown}: the body is not JSON once expanded: {exc}") from None
    return body
