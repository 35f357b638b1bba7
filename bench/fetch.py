"""The fetch-bound scenarios: a backlog of events under a rule that fetches, against a
local web service in a child process that answers after a fixed delay.

  fetch_client    the HTTP clients alone against the service, 64 requests in flight:
                  resc's own (resc.fetch.http1), httpx's AsyncClient and aiohttp (when
                  installed) side by side, with the CPU each spends per request
  fetch_original  the original's protocol re-enacted with a sequential fetch per event
  fetch_5ms       the backlog with every answer after 5 ms, at several concurrencies
  fetch_5ms_2x    the same backlog shared by two resc processes on one config (each its
                  own instance id), at the concurrencies that do best with one
  fetch_slow      the same with 10% of the answers after 200 ms

The service is asyncio (uvloop) answering raw HTTP/1.1 with keep-alive, so that it costs
far less per request than resc does. It answers `/items/<id>` with `{"id": "<id>"}`,
and the rule makes `trt/<plant>/${db.id}`: every task carries the answer of its own
fetch, and each run checks that every event made exactly its task, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, cast

from bench.run import (
    EXAMPLE_RULE,
    INPUT,
    TAKEN,
    WrongResult,
    check_backlog,
    expected_tasks,
    preload,
    resc,
    run_original,
    wait_for,
)
from resc.dev.embedded import EmbeddedRedis, free_port

HOST = "127.0.0.1"
FAST_S = 0.005
SLOW_S = 0.2
SLOW_EVERY = 10  # one answer in 10 is slow, in the slow variant


@dataclass(frozen=True)
class FetchSizes:
    backlog: int
    original: int
    concurrencies: tuple[int, ...]
    slow_concurrencies: tuple[int, ...]
    twice_concurrencies: tuple[int, ...]
    client_requests: int


FETCH_FULL = FetchSizes(
    backlog=10_000,
    original=1_000,
    concurrencies=(1, 4, 16, 32, 64, 128, 256),
    slow_concurrencies=(16, 64, 256),
    twice_concurrencies=(64, 128),
    client_requests=20_000,
)
FETCH_QUICK = FetchSizes(
    backlog=300,
    original=100,
    concurrencies=(1, 16),
    slow_concurrencies=(16,),
    twice_concurrencies=(16,),
    client_requests=500,
)


def fetch_rules(port: int) -> list[dict[str, Any]]:
    make = dict(EXAMPLE_RULE["make"], task="trt/${process_id}/${db.id}")
    fetch = {"url": f"http://{HOST}:{port}/items/${{product_id}}", "returns": "db"}
    return [{**EXAMPLE_RULE, "fetch": [fetch], "make": make}]


# --- the web service -------------------------------------------------------------------


def _answer(path: bytes) -> bytes:
    item = path.rsplit(b"/", 1)[-1]
    body = b'{"id":"' + item + b'"}'
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


class _ServiceProtocol(asyncio.Protocol):
    """Answers each GET after its delay. Clients that keep a connection alive send the
    next request only after the answer to the last one, so answers stay in order."""

    def __init__(self, delay_of: Callable[[bytes], float], counter: list[int]) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.delay_of = delay_of
        self.counter = counter

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        loop = asyncio.get_running_loop()
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            path = head.split(b" ", 2)[1]
            self.counter[0] += 1
            loop.call_later(self.delay_of(path), self._send, _answer(path))

    def _send(self, answer: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(answer)


def _serve(port: int, slow: bool, ready: Any) -> None:
    def delay_of(path: bytes) -> float:
        item = path.rsplit(b"/", 1)[-1]
        if slow and item.isdigit() and int(item) % SLOW_EVERY == 0:
            return SLOW_S
        return FAST_S

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        counter = [0]
        server = await loop.create_server(
            lambda: _ServiceProtocol(delay_of, counter), HOST, port, backlog=1024
        )
        ready.set()
        async with server:
            await server.serve_forever()

    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve())


@contextmanager
def web_service(slow: bool) -> Iterator[tuple[int, BaseProcess]]:
    """The service in a child process; yields its port and the process."""
    port = free_port()
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    process = context.Process(target=_serve, args=(port, slow, ready), daemon=True)
    process.start()
    try:
        if not ready.wait(30):
            raise WrongResult("the web service did not start")
        yield port, process
    finally:
        process.terminate()
        process.join(10)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the scenarios ----------------------------------------------------------------------


def run_fetch_backlog(
    server: EmbeddedRedis,
    port: int,
    service_pid: int,
    count: int,
    concurrency: int,
    workdir: Path,
    processes: int = 1,
) -> dict[str, float]:
    """Events/s of a backlog of `count` events, each fetching once, taken by `processes`
    resc on one config, and the CPU per event of resc (all of them) and of the web
    service."""
    client = server.client()
    client.flushall()
    preload(client, "bench/staging", 0, count)
    queues = list(expected_tasks("set", count))
    with contextlib.ExitStack() as running:
        pids = [
            running.enter_context(
                resc(
                    server,
                    fetch_rules(port),
                    workdir,
                    concurrency=concurrency,
                    instance=f"bench-{i}" if processes > 1 else None,
                )
            ).pid
            for i in range(processes)
        ]
        cpu_before, service_before = sum(map(cpu_s, pids)), cpu_s(service_pid)
        started = time.perf_counter()
        client.rename("bench/staging", INPUT)

        def done() -> bool:
            pipe = client.pipeline(transaction=False)
            pipe.llen(INPUT)
            pipe.llen(TAKEN)
            for queue in queues:
                pipe.llen(queue)
            lengths = pipe.execute()
            return lengths[0] == 0 and lengths[1] == 0 and sum(lengths[2:]) >= count

        finished = wait_for(done, 600, f"{count} events")
        resc_cpu = sum(map(cpu_s, pids)) - cpu_before
        service_cpu = cpu_s(service_pid) - service_before
    check_backlog(client, "set", count)
    client.close()
    return {
        "events_per_s": count / (finished - started),
        "resc_cpu_us_per_event": resc_cpu / count * 1e6,
        "service_cpu_us_per_event": service_cpu / count * 1e6,
    }


def original_fetcher(port: int) -> Callable[[str], str]:
    """The original's fetch: one request at a time on one keep-alive connection."""
    import http.client

    connection = http.client.HTTPConnection(HOST, port)

    def fetch(product: str) -> str:
        connection.request("GET", f"/items/{product}")
        answer = connection.getresponse()
        body = answer.read()
        if answer.status != 200:
            raise WrongResult(f"the web service answered {answer.status}")
        return str(json.loads(body)["id"])

    return fetch


async def _load(kind: str, port: int, count: int, in_flight: int) -> tuple[float, float]:
    """Wall and CPU seconds for `count` requests, after a warm-up that opens the
    connections."""
    url = f"http://{HOST}:{port}/items/"
    warm_up = in_flight * 4
    left = iter(range(count + warm_up))
    clock: list[float] = []

    def started(i: int) -> None:
        if i == warm_up:
            clock.extend((time.perf_counter(), time.process_time()))

    if kind == "httpx":
        import httpx

        limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
        async with httpx.AsyncClient(limits=limits) as hx:

            async def one_httpx() -> None:
                for i in left:
                    started(i)
                    answer = await hx.get(f"{url}{i}")
                    if json.loads(answer.content)["id"] != str(i):
                        raise WrongResult("wrong answer")

            await asyncio.gather(*(one_httpx() for _ in range(in_flight)))
        return time.perf_counter() - clock[0], time.process_time() - clock[1]
    if kind == "http1":
        from resc.fetch.client import HEADERS
        from resc.fetch.http1 import Http1Client, target_of

        client = Http1Client(in_flight, HEADERS)

        async def one_http1() -> None:
            for i in left:
                started(i)
                answer = await client.request(
                    "GET", target_of(f"{url}{i}"), None, None, 10.0, 1 << 20
                )
                if json.loads(answer.body)["id"] != str(i):
                    raise WrongResult("wrong answer")

        await asyncio.gather(*(one_http1() for _ in range(in_flight)))
        await client.close()
        return time.perf_counter() - clock[0], time.process_time() - clock[1]
    import aiohttp

    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one_aiohttp() -> None:
            for i in left:
                started(i)
                async with session.get(f"{url}{i}") as answer:
                    if json.loads(await answer.read())["id"] != str(i):
                        raise WrongResult("wrong answer")

        await asyncio.gather(*(one_aiohttp() for _ in range(in_flight)))
    return time.perf_counter() - clock[0], time.process_time() - clock[1]


def _client_alone(kind: str, port: int, count: int, in_flight: int) -> dict[str, float]:
    import uvloop

    elapsed, cpu = uvloop.run(_load(kind, port, count, in_flight))
    return {"requests_per_s": count / elapsed, "cpu_us_per_request": cpu / count * 1e6}


def run_client(port: int, count: int) -> dict[str, dict[str, float]]:
    """Each installed async client alone against the 5 ms service, in a child process."""
    kinds = ["http1", "httpx"]
    with contextlib.suppress(ImportError):
        import aiohttp  # noqa: F401

        kinds.append("aiohttp")
    results = {}
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        for kind in kinds:
            results[kind] = pool.apply(_client_alone, (kind, port, count, 64))
    return results


def run_all(
    server: EmbeddedRedis, workdir: Path, quick: bool, scenarios: set[str]
) -> dict[str, Any]:
    """The fetch scenarios among `scenarios`, printing each line of the table."""
    sizes = FETCH_QUICK if quick else FETCH_FULL
    results: dict[str, Any] = {}
    wanted = [name for name in SCENARIOS if name in scenarios]
    if not wanted:
        return results
    with web_service(slow=False) as (port, service):
        if "fetch_client" in wanted:
            clients = results["fetch_client"] = run_client(port, sizes.client_requests)
            for kind, figures in clients.items():
                print(
                    f"  fetch_client {kind:<7} {figures['requests_per_s']:>8,.0f} requests/s "
                    f"alone, 64 in flight, {figures['cpu_us_per_request']:.0f} µs CPU each",
                    flush=True,
                )
        if "fetch_original" in wanted:
            fetch = original_fetcher(port)
            results["fetch_original"] = run_original(server, sizes.original, fetch)
            print(
                f"  {'fetch_original':<18} {results['fetch_original']:>10,.0f} events/s "
                f"(sequential fetch, {FAST_S * 1000:g} ms service)",
                flush=True,
            )
        if "fetch_5ms" in wanted:
            results["fetch_5ms"] = _sweep(
                "fetch_5ms",
                server,
                port,
                service,
                sizes.backlog,
                sizes.concurrencies,
                workdir,
                results,
            )
        if "fetch_5ms_2x" in wanted:
            results["fetch_5ms_2x"] = _sweep(
                "fetch_5ms_2x",
                server,
                port,
                service,
                sizes.backlog,
                sizes.twice_concurrencies,
                workdir,
                results,
                processes=2,
            )
    if "fetch_slow" in wanted:
        with web_service(slow=True) as (port, service):
            results["fetch_slow"] = _sweep(
                "fetch_slow",
                server,
                port,
                service,
                sizes.backlog,
                sizes.slow_concurrencies,
                workdir,
                results,
            )
    return results


def _sweep(
    name: str,
    server: EmbeddedRedis,
    port: int,
    service: BaseProcess,
    count: int,
    concurrencies: tuple[int, ...],
    workdir: Path,
    results: dict[str, Any],
    processes: int = 1,
) -> dict[str, dict[str, float]]:
    sweep = {}
    assert service.pid is not None
    for concurrency in concurrencies:
        figures = run_fetch_backlog(
            server, port, service.pid, count, concurrency, workdir, processes
        )
        sweep[str(concurrency)] = figures
        ratio = ""
        one = results.get("fetch_5ms", {}).get(str(concurrency)) if processes > 1 else None
        if one is not None:
            ratio = f", {figures['events_per_s'] / one['events_per_s']:.2f}x one process"
        if "fetch_original" in results:
            ratio += f", {figures['events_per_s'] / results['fetch_original']:.0f}x original"
        print(
            f"  {name:<12} c={concurrency:<4} {figures['events_per_s']:>8,.0f} events/s{ratio}"
            f"  (CPU per event: resc {figures['resc_cpu_us_per_event']:.0f} µs, "
            f"service {figures['service_cpu_us_per_event']:.0f} µs)",
            flush=True,
        )
    return sweep


SCENARIOS = ["fetch_client", "fetch_original", "fetch_5ms", "fetch_5ms_2x", "fetch_slow"]
