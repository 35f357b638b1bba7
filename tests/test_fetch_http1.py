"""resc.fetch.http1, the watchers' HTTP client, against a scripted server on loopback that
answers each request with raw bytes chosen by its path: framings (Content-Length,
chunked, ended by the close), compression, interim answers, kept-alive connections the
server closed, bytes that are not HTTP, slow and huge answers, TLS, and the cap on open
connections."""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from resc.fetch.client import HEADERS
from resc.fetch.http1 import Answer, Http1Client, HttpError, target_of

# path -> (bytes to send, then: "keep", "close", "sleep:S" before sending, "hold:S" after)
Script = Callable[[str], tuple[bytes, str]]


def _ok(body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n{head}\r\n".encode() + body


class ScriptedServer:
    """Answers each request by `script(path)`; records every request's head and counts
    connections, and the most open at once."""

    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.tls = tls
        self.requests: list[bytes] = []
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        with self._lock:
            self.connections += 1
            self.open += 1
            self.most_open = max(self.most_open, self.open)
        try:
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_side=True)
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        size = int(line.split(b":")[1])
                        while len(buffer) < size:
                            buffer += sock.recv(65536)
                        buffer = buffer[size:]
                self.requests.append(head)
                path = head.split(b" ")[1].decode()
                answer, then = self.script(path)
                if then.startswith("sleep:"):
                    time.sleep(float(then.removeprefix("sleep:")))
                sock.sendall(answer)
                if then.startswith("hold:"):  # sent; then nothing more for a while
                    time.sleep(float(then.removeprefix("hold:")))
                    return
                if then == "close":
                    return
        except OSError:
            return
        finally:
            with self._lock:
                self.open -= 1
            sock.close()

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(script: Script, tls: ssl.SSLContext | None = None) -> ScriptedServer:
        servers.append(ScriptedServer(script, tls))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def fetch(
    *urls: str,
    max_connections: int = 8,
    timeout_s: float = 5.0,
    limit: int = 1 << 20,
    headers: dict[bytes, bytes] | None = None,
    method: str = "GET",
    body: bytes | None = None,
    between: float = 0.0,
) -> list[Answer | HttpError]:
    """Each URL's answer (or error), all requested at once from one client, or one after
    the other `between` seconds apart."""

    async def run() -> list[Answer | HttpError]:
        client = Http1Client(max_connections, HEADERS)

        async def one(url: str) -> Answer | HttpError:
            try:
                return await client.request(method, target_of(url), headers, body, timeout_s, limit)
            except HttpError as exc:
                return exc

        try:
            if between:
                out = []
                for url in urls:
                    out.append(await one(url))
                    await asyncio.sleep(between)
                return out
            return list(await asyncio.gather(*(one(url) for url in urls)))
        finally:
            await client.close()

    return asyncio.run(run())


def answer_of(result: Answer | HttpError) -> Answer:
    assert isinstance(result, Answer), result
    return result


def error_of(result: Answer | HttpError) -> HttpError:
    assert isinstance(result, HttpError), result
    return result


def test_answers_framed_by_length_by_chunks_and_by_the_close(serve):
    def script(path: str) -> tuple[bytes, str]:
        if path == "/length":
            return _ok(b'{"a":1}'), "keep"
        if path == "/chunked":
            return (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                b'3\r\n{"a\r\n4\r\n":2}\r\n0\r\n\r\n',
                "keep",
            )
        return b'HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{"a":3}', "close"

    server = serve(script)
    paths = ["/length", "/chunked", "/close", "/length"]
    results = fetch(*[server.url(p) for p in paths], between=0.01)
    assert [answer_of(r).body for r in results] == [b'{"a":1}', b'{"a":2}', b'{"a":3}', b'{"a":1}']
    # The first three shared a connection, which the answer ended by its close ended.
    assert server.connections == 2


def test_headers_of_the_request_and_of_the_answer(serve):
    server = serve(lambda path: (_ok(b"{}", "X-One: a", "x-one: b", "Retry-After: 3"), "keep"))
    [result] = fetch(
        server.url("/h?q=1").replace("127.0.0.1", "user:p%40ss@127.0.0.1"),
        headers={b"Accept": b"text/plain", b"x-token": b"t1"},
    )
    answer = answer_of(result)
    assert answer.status == 200 and answer.reason == "OK"
    assert answer.headers["x-one"] == "a, b" and answer.headers["retry-after"] == "3"
    [head] = server.requests
    lines = head.decode().split("\r\n")
    assert lines[0] == "GET /h?q=1 HTTP/1.1"
    names = [line.split(":")[0].lower() for line in lines[1:]]
    assert names.count("accept") == 1 and "Accept: text/plain" in lines  # the fetch's own
    assert f"host: 127.0.0.1:{server.port}" in lines
    assert "authorization: Basic dXNlcjpwQHNz" in lines  # user:p@ss
    assert "x-token: t1" in lines and "accept-encoding: gzip, deflate" in lines


def test_a_post_sends_its_body_with_its_length(serve):
    server = serve(lambda path: (_ok(b"{}"), "keep"))
    fetch(
        server.url("/p"),
        method="POST",
        body=b'{"id":"1"}',
        headers={b"content-type": b"application/json"},
    )
    [head] = server.requests
    assert head.startswith(b"POST /p HTTP/1.1") and b"content-length: 10" in head


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw deflate"])
def test_compressed_answers_are_decompressed(serve, encoding):
    body = b'{"text":"' + b"x" * 10_000 + b'"}'
    if encoding == "gzip":
        packed = gzip.compress(body)
    elif encoding == "deflate":
        packed = zlib.compress(body)
    else:
        packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        packed = packer.compress(body) + packer.flush()
    name = encoding.removeprefix("raw ")
    server = serve(lambda path: (_ok(packed, f"content-encoding: {name}"), "keep"))
    [result] = fetch(server.url("/z"))
    assert answer_of(result).body == body


def test_a_compression_bomb_stops_at_the_size_cap(serve):
    bomb = gzip.compress(b"0" * 50_000_000)  # about 50 KB on the wire
    server = serve(lambda path: (_ok(bomb, "content-encoding: gzip"), "keep"))
    started = time.monotonic()
    [result] = fetch(server.url("/bomb"), limit=100_000)
    error = error_of(result)
    assert error.name == "TooLarge" and "100000 bytes" in str(error)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("declared", [True, False])
def test_answers_over_the_cap_fail_with_or_without_a_length(serve, declared):
    big = b"[" + b"1," * 100_000 + b"1]"
    if declared:
        raw = _ok(big)
    else:
        raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        raw += b"".join(
            b"%x\r\n%s\r\n" % (len(big[i : i + 1000]), big[i : i + 1000])
            for i in range(0, len(big), 1000)
        )
        raw += b"0\r\n\r\n"
    server = serve(lambda path: (raw, "keep"))
    [result] = fetch(server.url("/big"), limit=1000)
    assert error_of(result).name == "TooLarge"


def test_an_interim_answer_is_skipped(serve):
    raw = b"HTTP/1.1 100 Continue\r\n\r\n" + _ok(b'{"done":true}')
    server = serve(lambda path: (raw, "keep"))
    [result] = fetch(server.url("/i"))
    assert answer_of(result).body == b'{"done":true}'


def _closes_on_the_second_request() -> Script:
    """Answers, but closes the connection without an answer at the second request: as a
    service closing a kept-alive connection just as the client sends on it."""
    seen = [0]

    def script(path: str) -> tuple[bytes, str]:
        seen[0] += 1
        return (b"", "close") if seen[0] == 2 else (_ok(b"{}"), "keep")

    return script


def test_a_connection_the_server_closed_after_its_answer_is_not_used_again(serve):
    server = serve(lambda path: (_ok(b"{}"), "close"))
    results = fetch(server.url("/1"), server.url("/2"), between=0.05, method="POST", body=b"{}")
    assert [answer_of(r).status for r in results] == [200, 200]
    assert server.connections == 2 and len(server.requests) == 2


def test_a_get_on_a_kept_alive_connection_closed_under_it_is_sent_again_on_a_new_one(serve):
    server = serve(_closes_on_the_second_request())
    results = fetch(server.url("/1"), server.url("/2"), between=0.05)
    assert [answer_of(r).status for r in results] == [200, 200]
    assert server.connections == 2 and len(server.requests) == 3


def test_a_post_on_a_kept_alive_connection_closed_under_it_is_not_sent_again(serve):
    server = serve(_closes_on_the_second_request())
    results = fetch(server.url("/1"), server.url("/2"), between=0.05, method="POST", body=b"{}")
    assert answer_of(results[0]).status == 200
    error = error_of(results[1])
    assert error.name == "RemoteProtocolError" and error.retryable  # the fetch's retries decide
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    "raw",
    [b"SSH-2.0-OpenSSH_9.2\r\n", b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", b""],
    ids=["not http", "cut off", "nothing"],
)
def test_an_answer_that_is_not_http_or_is_cut_off_is_a_protocol_error(serve, raw):
    server = serve(lambda path: (raw, "close"))
    [result] = fetch(server.url("/x"))
    error = error_of(result)
    assert error.name == "RemoteProtocolError" and error.retryable


def test_a_service_that_stops_sending_times_out(serve):
    raw = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc"
    server = serve(lambda path: (raw, "sleep:3"))
    started = time.monotonic()
    [result] = fetch(server.url("/slow"), timeout_s=0.5)
    assert error_of(result).name == "ReadTimeout"
    assert time.monotonic() - started < 2


def test_a_refused_connection_and_urls_that_cannot_be_requested():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    [result] = fetch(f"http://127.0.0.1:{port}/")
    assert error_of(result).name == "ConnectError" and error_of(result).retryable
    for url, name in [
        ("ftp://svc/1", "UnsupportedProtocol"),
        ("http:///nohost", "InvalidURL"),
        ("http://svc:99999/", "InvalidURL"),
    ]:
        with pytest.raises(HttpError) as info:
            target_of(url)
        assert info.value.name == name and not info.value.sent


def test_open_connections_never_exceed_the_cap(serve):
    server = serve(lambda path: (_ok(b"{}"), "sleep:0.05"))
    results = fetch(*[server.url(f"/{i}") for i in range(40)], max_connections=3)
    assert all(answer_of(r).status == 200 for r in results)
    assert server.most_open <= 3 and server.connections == 3


def test_idle_connections_of_another_origin_make_room_under_the_cap(serve):
    first = serve(lambda path: (_ok(b"{}"), "keep"))
    second = serve(lambda path: (_ok(b"{}"), "keep"))
    urls = [first.url("/a"), second.url("/b"), first.url("/c"), second.url("/d")]
    results = fetch(*urls, max_connections=1, between=0.01)
    assert all(answer_of(r).status == 200 for r in results)
    assert first.most_open == 1 and second.most_open == 1
    assert first.connections == 2 and second.connections == 2


def test_https_checks_the_certificate_against_the_trusted_authorities(serve, tmp_path, monkeypatch):
    trustme = pytest.importorskip("trustme")
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    server = serve(lambda path: (_ok(b'{"tls":true}'), "keep"), tls=context)
    [untrusted] = fetch(server.url("/t", "https"))
    assert error_of(untrusted).name == "ConnectError"
    assert "CERTIFICATE_VERIFY_FAILED" in str(untrusted)
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    [trusted] = fetch(server.url("/t", "https"))
    assert answer_of(trusted).body == b'{"tls":true}'


def test_many_requests_in_flight_each_get_their_own_answer(serve):
    server = serve(lambda path: (_ok(path.encode()), "keep"))
    urls = [server.url(f"/item/{i}") for i in range(500)]
    results: list[Any] = fetch(*urls, max_connections=16)
    assert [answer_of(r).body for r in results] == [f"/item/{i}".encode() for i in range(500)]


def test_a_connection_idle_for_too_long_is_closed_instead_of_used(serve, monkeypatch):
    monkeypatch.setattr("resc.fetch.http1._IDLE_S", 0.2)
    server = serve(lambda path: (_ok(b"{}"), "keep"))
    results = fetch(server.url("/1"), server.url("/2"), server.url("/3"), between=0.05)
    assert all(answer_of(r).status == 200 for r in results)
    assert server.connections == 1  # 50 ms apart: the same connection
    results = fetch(server.url("/4"), server.url("/5"), between=0.3)
    assert all(answer_of(r).status == 200 for r in results)
    assert server.connections == 3  # 300 ms apart: a new one


def test_headers_without_end_fail_instead_of_filling_the_memory(serve):
    endless = b"HTTP/1.1 200 OK\r\nx-long: " + b"a" * 200_000  # and never a line end
    server = serve(lambda path: (endless, "hold:5"))
    started = time.monotonic()
    [result] = fetch(server.url("/h"), timeout_s=4)
    error = error_of(result)
    assert error.name == "RemoteProtocolError" and "65536 bytes" in str(error)
    assert time.monotonic() - started < 3


def test_a_large_first_read_holding_headers_and_body_is_not_taken_for_long_headers(serve):
    body = b'{"pad":"' + b"p" * 300_000 + b'"}'
    server = serve(lambda path: (_ok(body), "keep"))
    [result] = fetch(server.url("/b"))
    assert answer_of(result).body == body


@pytest.mark.parametrize(
    "url",
    [
        "http://user:s3cret@/path",
        "http://user:s3cret@host:port/",
        "http://user:s3cret@[::1/",
        "gopher://user:s3cret@host/",
        "http://user:s3cret@host/a b",
    ],
)
def test_a_url_that_cannot_be_requested_is_named_without_its_password(url):
    with pytest.raises(HttpError) as info:
        target_of(url)
    assert "s3cret" not in str(info.value)


def test_headers_without_end_after_an_interim_answer_fail_too(serve):
    endless = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nx-long: " + b"a" * 200_000
    server = serve(lambda path: (endless, "hold:5"))
    [result] = fetch(server.url("/h"), timeout_s=4)
    error = error_of(result)
    assert error.name == "RemoteProtocolError" and "65536 bytes" in str(error)


def test_a_fetchs_own_headers_replace_the_clients_on_every_request(serve):
    server = serve(lambda path: (_ok(b"{}"), "keep"))
    own = {b"User-Agent": b"mine", b"Host": b"svc.example"}
    fetch(server.url("/1"), server.url("/2"), headers=own, between=0.01)
    fetch(server.url("/3"))
    for head in server.requests[:2]:
        lines = head.decode().split("\r\n")
        names = [line.split(":")[0].lower() for line in lines[1:]]
        assert names.count("user-agent") == 1 and names.count("host") == 1
        assert "User-Agent: mine" in lines and "Host: svc.example" in lines
    assert b"user-agent: resc/" in server.requests[2]
