"""The benchmark's HTTP load client: HTTP/1.1 with keep-alive on asyncio streams (uvloop
when installed), run in child processes so that it never shares an interpreter with the
server it measures. Requests are prebuilt bytes; a response is read by its status line
and Content-Length, nothing more, so that the client costs far less than the server.

Workloads (Load.kind), each on `connections` connections per process:
  produce   one event per POST .../events, `count` requests per connection
  batch     a JSON array of `batch` events per POST, `count` requests per connection
  cycle     claim (POST .../promises) then done, until a claim answers 204
  rate      open loop: one event per POST at `rate` requests/s in all, `count` in all;
            latency counted from each request's scheduled time (no coordinated omission)

`null_server` answers every request at once with a fixed 202: what the client alone can
do is measured against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

Answer = tuple[int, bytes]


@dataclass(frozen=True)
class Load:
    kind: str  # produce, batch, cycle or rate
    host: str
    port: int
    queue: str  # where events are posted, or the todo queue of a cycle
    connections: int
    count: int = 0  # per connection (produce, batch), or in all (rate)
    batch: int = 1
    rate: float = 0.0
    start_at: float = 0.0  # time.time() at which every process starts sending
    tag: str = "p0"  # makes this process's events unique


@dataclass
class Outcome:
    """What one process saw: every answer that is not the expected one is a problem."""

    sent: int = 0
    events: int = 0
    first_s: float = 0.0  # time.time() of the first send
    last_s: float = 0.0  # time.time() of the last answer
    problems: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)  # cycle: the tasks claimed and done
    latencies_ms: list[float] = field(default_factory=list)  # rate


def request(method: str, path: str, body: bytes = b"", content_type: str = "text/plain") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(body)}\r\n"
    if body:
        head += f"Content-Type: {content_type}\r\n"
    return head.encode() + b"\r\n" + body


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def send(self, raw: bytes) -> Answer:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                raise ValueError("the benchmark's client reads Content-Length bodies only")
        return status, (await self.reader.readexactly(length) if length else b"")

    def close(self) -> None:
        self.writer.close()


def _event_path(queue: str) -> str:
    return f"/v1/queues/{queue}/events"


async def _produce(load: Load, conn: Connection, index: int, out: Outcome) -> None:
    path = _event_path(load.queue)
    batch = load.batch if load.kind == "batch" else 0
    expected = json.dumps({"queued": max(batch, 1)}, separators=(",", ":")).encode()
    for i in range(load.count):
        name = f"{load.tag}/{index}/{i}"
        if batch:
            events = [f"{name}/{j}" for j in range(batch)]
            raw = request("POST", path, json.dumps(events).encode(), "application/json")
        else:
            raw = request("POST", path, name.encode())
        answer = await conn.send(raw)
        out.sent += 1
        if answer != (202, expected):
            out.problems.append(f"{name}: {answer[0]} {answer[1][:200]!r}")
        else:
            out.events += max(batch, 1)


async def _cycle(load: Load, conn: Connection, index: int, out: Outcome) -> None:
    promises = f"/v1/queues/{load.queue}/promises"
    claim = request("POST", promises + "?timeout=60s")
    while True:
        status, body = await conn.send(claim)
        out.sent += 1
        if status == 204:
            return
        if status != 200:
            out.problems.append(f"claim: {status} {body[:200]!r}")
            return
        promise = json.loads(body)
        status, body = await conn.send(request("POST", f"{promises}/{promise['id']}/done"))
        out.sent += 1
        if status != 200 or json.loads(body).get("outcome") != "done":
            out.problems.append(f"done {promise['task']}: {status} {body[:200]!r}")
            continue
        out.tasks.append(promise["task"])
        out.events += 1


async def _rate(load: Load, conns: list[Connection], out: Outcome) -> None:
    """`count` single-event produces at `rate`/s over all connections; each request
    waits in a queue from its scheduled time until a connection is free."""
    scheduled: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    path = _event_path(load.queue)
    start = time.perf_counter()

    async def dispatch() -> None:
        for i in range(load.count):
            due = start + i / load.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            scheduled.put_nowait((i, due))
        for _ in conns:
            scheduled.put_nowait(None)

    async def serve(conn: Connection) -> None:
        while (item := await scheduled.get()) is not None:
            i, due = item
            answer = await conn.send(request("POST", path, f"{load.tag}/r/{i}".encode()))
            out.latencies_ms.append((time.perf_counter() - due) * 1000)
            out.sent += 1
            if answer != (202, b'{"queued":1}'):
                out.problems.append(f"{i}: {answer[0]} {answer[1][:200]!r}")
            else:
                out.events += 1

    await asyncio.gather(dispatch(), *(serve(conn) for conn in conns))


async def _run(load: Load) -> Outcome:
    out = Outcome()
    conns = [await Connection.open(load.host, load.port) for _ in range(load.connections)]
    try:
        delay = load.start_at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        out.first_s = time.time()
        if load.kind == "rate":
            await _rate(load, conns, out)
        else:
            work: Callable[[Load, Connection, int, Outcome], Any]
            work = _cycle if load.kind == "cycle" else _produce
            await asyncio.gather(*(work(load, conn, i, out) for i, conn in enumerate(conns)))
        out.last_s = time.time()
    finally:
        for conn in conns:
            conn.close()
    return out


def run(load: Load) -> Outcome:
    """Runs `load` in this process (the benchmark calls it in a child process)."""
    return _event_loop_runner(_run(load))


def _event_loop_runner(coroutine: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


# --- the null server ---------------------------------------------------------------------

NULL_ANSWER = (
    b"HTTP/1.1 202 Accepted\r\ncontent-length: 12\r\ncontent-type: application/json\r\n\r\n"
    b'{"queued":1}'
)


class _NullProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        answers = 0
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                break
            self.buffer = self.buffer[end + 4 + length :]
            answers += 1
        if answers and self.transport is not None:
            self.transport.write(NULL_ANSWER * answers)


def null_server(port: int, stop_after_s: float) -> None:
    """Answers every request on 127.0.0.1:`port` with a fixed 202, for `stop_after_s`
    seconds."""

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_NullProtocol, "127.0.0.1", port)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(stop_after_s)
        server.close()

    _event_loop_runner(serve())
