"""HTTP/1.1 requests on an asyncio event loop, for the watchers' fetches: keep-alive
connections shared by every request of one client, at most `max_connections` open at
once, answers parsed by httptools (llhttp, the parser of Node.js and uvicorn).

A request is one write and an answer a few parser callbacks: about a quarter of the CPU
that aiohttp spends per request (bench, fetch_client). What it does: http and https
(the system's certificate store, the host name checked), a user name and password in
the URL as Basic authorization, Content-Length and chunked bodies and bodies that end
with the connection, gzip and deflate answers (the size cap counts the decompressed
bytes, so a small bomb stops at the cap), a timeout on connecting and on each wait for
the service's next bytes, and one more try on a new connection when a kept-alive one
turns out closed before any answer byte of a GET. No proxies, no cookies, no HTTP/2;
redirects are the caller's (resc.fetch.aio), which keeps them on one origin.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import re
import ssl
import zlib
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import httptools

# Idle keep-alive connections older than this are closed rather than used: servers close
# theirs after 5 to 75 s, and a request on a connection closing under it costs a retry.
_IDLE_S = 15.0
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NO_BODY = frozenset({204, 304})
# The most an answer's status line and headers may take, as in most HTTP servers.
MAX_HEAD_BYTES = 64 * 1024


class HttpError(Exception):
    """A request that got no usable answer. `name` says how, in the words of the threaded
    fetcher's messages: ConnectError, ReadTimeout, RemoteProtocolError, InvalidURL,
    UnsupportedProtocol, DecodingError, TooLarge."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name

    @property
    def retryable(self) -> bool:
        """Whether another try may get an answer: the connection or the wait failed."""
        return self.name in ("ConnectError", "ReadTimeout", "RemoteProtocolError")

    @property
    def sent(self) -> bool:
        """Whether the request reached the network (the URL could be used)."""
        return self.name not in ("InvalidURL", "UnsupportedProtocol")


@dataclass(frozen=True, slots=True)
class Target:
    """Where a request goes: its origin, and what to write on its request line."""

    scheme: str
    host: str
    port: int
    path: str  # path and query, percent-encoded
    authorization: bytes | None  # from a user name and password in the URL

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    @property
    def host_header(self) -> bytes:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port != _DEFAULT_PORTS[self.scheme]:
            host = f"{host}:{self.port}"
        return host.encode("ascii")


def target_of(url: str) -> Target:
    """A URL (ASCII, percent-encoded) as a Target. HttpError (InvalidURL,
    UnsupportedProtocol) when it cannot be requested."""
    # The origin part (scheme, user, host and port) is parsed once per origin.
    after_scheme = url.find("://") + 3
    end = len(url)
    for mark in "/?#":
        found = url.find(mark, after_scheme)
        if 0 <= found < end:
            end = found
    scheme, host, port, authorization = _origin(url[:end])
    path = url[end:].partition("#")[0]
    if not path.startswith("/"):
        path = "/" + path
    if not path.isascii() or _NOT_IN_PATH.search(path):
        raise HttpError("InvalidURL", "invalid characters in the path")
    return Target(scheme, host, port, path, authorization)


_NOT_IN_PATH = re.compile(r"[\x00-\x20\x7f]")


@functools.lru_cache(maxsize=256)
def _origin(prefix: str) -> tuple[str, str, int, bytes | None]:
    """Scheme, host, port and Basic authorization of a URL's part before its path."""
    try:
        parts = urlsplit(prefix)
        port = parts.port
    except ValueError as exc:
        raise HttpError("InvalidURL", str(exc)) from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise HttpError(
            "UnsupportedProtocol",
            f"Request URL has an unsupported protocol '{scheme}://'.",
        )
    host = parts.hostname
    if not host:
        raise HttpError("InvalidURL", "the URL names no host")
    try:
        host.encode("ascii")
    except UnicodeEncodeError:
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise HttpError("InvalidURL", f"invalid host name: {exc}") from None
    if any(c in host for c in " \t\r\n/\\@"):
        raise HttpError("InvalidURL", "invalid host name")
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        authorization = b"Basic " + base64.b64encode(pair)
    return scheme, host, port or _DEFAULT_PORTS[scheme], authorization


@dataclass(slots=True)
class Answer:
    """An answer: status, reason phrase, headers (names in lower case; a repeated header's
    values joined with commas) and the body, decompressed."""

    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class _Decoder:
    """Decompresses a body as it comes."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS if "gzip" in encoding else 15)
        self._first = True

    def feed(self, data: bytes, most: int) -> bytes:
        """What `data` decompresses to, at most `most` bytes of it (a bomb stops there)."""
        try:
            out = self._zlib.decompress(data, most)
        except zlib.error:
            if not (self._first and self.encoding == "deflate"):
                raise
            # "deflate" without its zlib header, as some servers send it.
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
            out = self._zlib.decompress(data, most)
        self._first = False
        return out

    def flush(self) -> bytes:
        """What the decompressor still holds, once the body has ended."""
        return self._zlib.flush()


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its answer parsed as it comes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: tuple[str, str, int]) -> None:
        self.loop = loop
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        self._answer: Answer | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._limit = 0
        self._decoder: _Decoder | None = None
        self._received = False  # any byte of the current answer
        self._head_size = 0  # bytes received before the end of the answer's headers
        self._head_done = False
        self._until_close = False  # a body that ends with the connection
        self._timeout_s = 0.0
        self._last_read = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # --- requests -------------------------------------------------------------------

    def send(
        self, head: bytes, body: bytes | None, limit: int, timeout_s: float
    ) -> asyncio.Future[Answer]:
        """Write a request; the future of its Answer."""
        assert self.transport is not None and self._waiter is None
        self._waiter = self.loop.create_future()
        self._answer, self._chunks, self._size, self._decoder = None, [], 0, None
        self._head_size, self._head_done = 0, False
        self._limit, self._received, self._until_close = limit, False, False
        self._timeout_s, self._last_read = timeout_s, self.loop.time()
        # One timer per connection, not per request: it is moved only when it would go
        # off too late; going off early, it looks again when the wait is due.
        due = self._last_read + timeout_s
        if self._timer is None or self._timer.when() > due:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(due, self._check_timeout)
        self.transport.write(head + body if body else head)
        return self._waiter

    @property
    def received(self) -> bool:
        """Whether any byte of the answer to the last request came."""
        return self._received

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.close()

    def _finish(self, answer: Answer | None = None, error: HttpError | None = None) -> None:
        waiter, self._waiter = self._waiter, None
        if error is not None:
            self.close()
        if waiter is None or waiter.done():
            return
        if error is not None:
            waiter.set_exception(error)
        else:
            assert answer is not None
            waiter.set_result(answer)

    def _check_timeout(self) -> None:
        self._timer = None
        if self._waiter is None:
            return
        due = self._last_read + self._timeout_s
        if self.loop.time() >= due:
            self._finish(error=HttpError("ReadTimeout", f"no answer within {self._timeout_s:g} s"))
        else:
            self._timer = self.loop.call_at(due, self._check_timeout)

    # --- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # bytes nobody asked for: the connection is unusable
            self.close()
            return
        self._received = True
        self._last_read = self.loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            # A callback's own HttpError (too large, undecodable) comes as the context of
            # the parser's HttpParserCallbackError.
            cause = exc.__context__
            if not isinstance(cause, HttpError):
                cause = HttpError("RemoteProtocolError", f"invalid answer: {exc}")
            self._finish(error=cause)
            return
        if not self._head_done:
            # The parser keeps a header until its end: a service sending headers without
            # end must not take the memory the body's cap protects.
            self._head_size += len(data)
            if self._head_size > MAX_HEAD_BYTES and self._waiter is not None:
                self._finish(
                    error=HttpError(
                        "RemoteProtocolError",
                        f"the answer's status line and headers pass {MAX_HEAD_BYTES} bytes",
                    )
                )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None:
            return
        if self._until_close and self._answer is not None:
            self._complete()
            return
        where = "during the answer" if self._received else "before an answer"
        self._finish(error=HttpError("RemoteProtocolError", f"Server disconnected {where}"))

    # --- httptools callbacks --------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        if self._waiter is None:
            raise HttpError("RemoteProtocolError", "bytes after the answer")
        self._answer = Answer(self._parser.get_status_code(), status.decode("latin-1"))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._answer is None:  # no reason phrase: on_status was not called
            self.on_status(b"")
        assert self._answer is not None
        headers = self._answer.headers
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        self._head_done = True
        if self._answer is None:  # no reason phrase: on_status was not called
            self.on_status(b"")
        answer = self._answer
        assert answer is not None
        headers = answer.headers
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._limit:
            raise HttpError(
                "TooLarge",
                f"the answer has {declared} bytes, more than max_response_bytes ({self._limit})",
            )
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            self._decoder = _Decoder(encoding)
        elif encoding not in ("identity", ""):
            raise HttpError("DecodingError", f"unsupported Content-Encoding {encoding!r}")
        self._until_close = (
            not declared
            and "chunked" not in headers.get("transfer-encoding", "").lower()
            and answer.status not in _NO_BODY
            and answer.status >= 200
        )

    def on_body(self, body: bytes) -> None:
        if self._decoder is not None:
            try:
                body = self._decoder.feed(body, self._limit - self._size + 1)
            except zlib.error as exc:
                raise HttpError("DecodingError", f"invalid compressed body: {exc}") from None
        self._add(body)

    def _add(self, body: bytes) -> None:
        """Keep a piece of the (decompressed) body; TooLarge past the size cap."""
        self._size += len(body)
        if self._size > self._limit:
            raise HttpError(
                "TooLarge",
                f"the answer is larger than max_response_bytes ({self._limit} bytes)",
            )
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if self._answer is not None and 100 <= self._answer.status < 200:
            # An interim answer (100 Continue): the real one follows, headers and all.
            self._answer, self._head_size, self._head_done = None, 0, False
            return
        self._until_close = False
        self._complete()

    def _complete(self) -> None:
        answer = self._answer
        if answer is None:
            self._finish(error=HttpError("RemoteProtocolError", "an answer without a status"))
            return
        if self._decoder is not None:
            try:
                self._add(self._decoder.flush())
            except HttpError as exc:
                self._finish(error=exc)
                return
        answer.body = b"".join(self._chunks)
        self._chunks = []
        if not self._parser.should_keep_alive():
            self.close()
        self._finish(answer)


class Http1Client:
    """Requests over keep-alive connections, at most `max_connections` open at once (a
    request waits for one beyond that). Use it from one event loop."""

    def __init__(self, max_connections: int, headers: dict[str, str]) -> None:
        self._max = max_connections
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._headers = {name.lower(): value for name, value in headers.items()}
        self._headers["accept-encoding"] = "gzip, deflate"
        self._commons: dict[tuple[bytes, ...], tuple[bytes, bool, bool]] = {}
        self._tls: ssl.SSLContext | None = None

    async def close(self) -> None:
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()

    async def request(
        self,
        method: str,
        target: Target,
        headers: dict[bytes, bytes] | None,
        body: bytes | None,
        timeout_s: float,
        limit: int,
    ) -> Answer:
        """Send a request and read its answer, whatever its status. HttpError otherwise."""
        head = self._head(method, target, headers, body)
        async with self._slots:
            conn = self._reused(target.origin)
            if conn is not None:
                try:
                    return await self._exchange(conn, head, body, limit, timeout_s)
                except HttpError as exc:
                    # A kept-alive connection the service had closed: once more on a new
                    # one, when nothing of the answer came and a GET may be sent again.
                    if conn.received or method != "GET" or exc.name != "RemoteProtocolError":
                        raise
            conn = await self._connect(target, timeout_s)
            return await self._exchange(conn, head, body, limit, timeout_s)

    async def _exchange(
        self, conn: _Connection, head: bytes, body: bytes | None, limit: int, timeout_s: float
    ) -> Answer:
        try:
            answer: Answer = await conn.send(head, body, limit, timeout_s)
        except BaseException:
            self._drop(conn)  # a request cut off (timeout, cancelled): its answer may come
            raise
        if conn.closed:
            self._open.discard(conn)
        else:
            conn.idle_since = conn.loop.time()
            self._idle.setdefault(conn.origin, deque()).append(conn)
        return answer

    def _reused(self, origin: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to be closed
            transport, fresh = conn.transport, conn.loop.time() - conn.idle_since < _IDLE_S
            if fresh and not conn.closed and transport and not transport.is_closing():
                return conn
            self._drop(conn)
        return None

    def _make_room(self) -> None:
        """Close the longest idle connection (of any origin) while max_connections are
        open: requests in flight are fewer (the semaphore), so the rest are idle."""
        while len(self._open) >= self._max:
            oldest = min(
                (idle for idle in self._idle.values() if idle),
                key=lambda idle: idle[0].idle_since,
                default=None,
            )
            if oldest is None:
                return
            self._drop(oldest.popleft())

    def _drop(self, conn: _Connection) -> None:
        conn.close()
        self._open.discard(conn)

    async def _connect(self, target: Target, timeout_s: float) -> _Connection:
        self._make_room()
        loop = asyncio.get_running_loop()
        tls = None
        if target.scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        try:
            async with asyncio.timeout(timeout_s):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, target.origin),
                    target.host,
                    target.port,
                    ssl=tls,
                    server_hostname=target.host if tls else None,
                )
        except TimeoutError:
            raise HttpError("ConnectError", f"no connection within {timeout_s:g} s") from None
        except OSError as exc:
            raise HttpError("ConnectError", str(exc) or type(exc).__name__) from None
        self._open.add(conn)
        return conn

    def _common_of(self, names: tuple[bytes, ...]) -> tuple[bytes, bool, bool]:
        """For a request whose own headers have `names`: the client's headers but those
        the request replaces, and whether to send the Host and the URL's authorization.
        Worked out once per set of names (a fetch's headers are its config's)."""
        known = self._commons.get(names)
        if known is None:
            given = {name.decode("latin-1").lower() for name in names}
            common = b"".join(
                f"{name}: {value}\r\n".encode("latin-1")
                for name, value in self._headers.items()
                if name not in given
            )
            known = self._commons[names] = (
                common,
                "host" not in given,
                "authorization" not in given,
            )
        return known

    def _head(
        self, method: str, target: Target, headers: dict[bytes, bytes] | None, body: bytes | None
    ) -> bytes:
        """The request line and headers: the request's own headers replace the client's
        (and the Host) of the same name."""
        common, host, authorization = self._common_of(tuple(headers) if headers else ())
        parts = [f"{method} {target.path} HTTP/1.1\r\n".encode("ascii")]
        if host:
            parts += [b"host: ", target.host_header, b"\r\n"]
        parts.append(common)
        if target.authorization is not None and authorization:
            parts += [b"authorization: ", target.authorization, b"\r\n"]
        if headers:
            for name, value in headers.items():
                parts += [name, b": ", value, b"\r\n"]
        if body is not None:
            parts.append(b"content-length: %d\r\n" % len(body))
        parts.append(b"\r\n")
        return b"".join(parts)
