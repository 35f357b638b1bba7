"""The HTTP API's scenarios: resc serving the API as a child process, loaded by the
keep-alive client of bench.client running in child processes of its own.

  api_client      the client alone, against a server that answers at once (what the
                  client can do here: the API's figures are only meaningful below it)
  api_produce     one event per POST .../events (requests/s)
  api_batch       JSON arrays of 100 events per POST (events/s)
  api_cycle       claim then done per task, with the example rule's dedup set (tasks/s)
  api_latency     open loop at a fixed rate of single-event POSTs: milliseconds from each
                  request's scheduled send time to its answer
  api_backlog     the backlog_set scenario on resc run with its HTTP server, without and
                  with an open-loop HTTP load at the api_latency rate (events/s of both,
                  alternating, in the same run, and their ratio)
  api_backlog_serve  the same with the load on a resc serve process beside resc run,
                  which then shares no interpreter with the watchers

Every run checks its result: each answer is the expected one, and Redis then holds
exactly the events posted, or exactly the tasks done, and nothing else.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import redis

from bench import client
from bench.client import Load, Outcome
from bench.run import (
    EXAMPLE_RULE,
    INPUT,
    TAKEN,
    WrongResult,
    check_backlog,
    expected_tasks,
    preload,
    wait_for,
)
from resc.dev.embedded import EmbeddedRedis

HOST = "127.0.0.1"
SIDE_QUEUE = "bench/api"  # produce target that no watcher takes from
TODO = "trt/plant0/todo-queue"
TODO_SET = "trt/plant0/todo-set"
BATCH = 100


@dataclass(frozen=True)
class ApiSizes:
    processes: int  # client processes
    connections: int  # per client process
    produce: int  # requests per connection
    batch: int  # requests per connection, of BATCH events each
    tasks: int
    rate: int
    rate_s: float
    backlog: int
    runs: int


API_FULL = ApiSizes(
    processes=1,
    connections=16,
    produce=2_000,
    batch=200,
    tasks=20_000,
    rate=500,
    rate_s=10.0,
    backlog=100_000,
    runs=3,
)
API_QUICK = ApiSizes(
    processes=2,
    connections=4,
    produce=100,
    batch=10,
    tasks=500,
    rate=200,
    rate_s=1.0,
    backlog=5_000,
    runs=1,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def http_config(port: int) -> dict[str, Any]:
    return {
        "listen": f"{HOST}:{port}",
        "produce": [INPUT, SIDE_QUEUE],
        "consume": [TODO],
    }


def config_of(server: EmbeddedRedis, port: int) -> dict[str, Any]:
    watcher = {"input_queue": INPUT, "taken_queue": TAKEN, "rules": [EXAMPLE_RULE]}
    return {"redis": {"url": server.url}, "watchers": [watcher], "http": http_config(port)}


def wait_http(port: int, process: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=1)
            conn.request("GET", "/livez")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            pass
        if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
            raise WrongResult(f"no HTTP server answered on port {port}")
        time.sleep(0.02)


@contextmanager
def serving(server: EmbeddedRedis, workdir: Path) -> Iterator[int]:
    """`resc serve` (the API without watchers) as a child process: yields its port."""
    port = free_port()
    config = workdir / "api.json"
    config.write_text(json.dumps(config_of(server, port)))
    process = subprocess.Popen(
        [sys.executable, "-m", "resc", "serve", str(config)],
        env={**os.environ, "RESC_LOG": "warn"},
    )
    try:
        wait_http(port, process, 30)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        if process.wait(30) != 0:
            raise WrongResult(f"resc serve exited with status {process.returncode}")


def run_clients(pool: ProcessPoolExecutor, loads: list[Load]) -> list[Outcome]:
    start_at = time.time() + 0.5
    futures = [
        pool.submit(client.run, replace(load, start_at=start_at, tag=f"p{i}"))
        for i, load in enumerate(loads)
    ]
    outcomes = [future.result(timeout=600) for future in futures]
    problems = [p for outcome in outcomes for p in outcome.problems]
    if problems:
        raise WrongResult(f"{len(problems)} unexpected answers, such as {problems[:3]}")
    return outcomes


def per_second(outcomes: list[Outcome]) -> float:
    elapsed = max(o.last_s for o in outcomes) - min(o.first_s for o in outcomes)
    return sum(o.events for o in outcomes) / elapsed


def loads(sizes: ApiSizes, kind: str, port: int, **fields: Any) -> list[Load]:
    base = Load(kind, HOST, port, SIDE_QUEUE, sizes.connections, **fields)
    return [base] * sizes.processes


def run_client_alone(pool: ProcessPoolExecutor, sizes: ApiSizes) -> float:
    """Requests/s of the client against a server that answers at once."""
    port = free_port()
    context = multiprocessing.get_context("spawn")
    server = context.Process(target=client.null_server, args=(port, 600.0), daemon=True)
    server.start()
    try:
        wait_connect(port)
        outcomes = run_clients(pool, loads(sizes, "produce", port, count=sizes.produce * 4))
    finally:
        server.kill()
        server.join()
    expected = sizes.processes * sizes.connections * sizes.produce * 4
    if sum(o.events for o in outcomes) != expected:
        raise WrongResult("the client did not send every request")
    return per_second(outcomes)


def wait_connect(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise WrongResult(f"nothing listens on port {port}") from None
            time.sleep(0.02)


def expected_events(sizes: ApiSizes, batch: int) -> set[bytes]:
    return {
        (f"p{p}/{c}/{i}" + (f"/{j}" if batch else "")).encode()
        for p in range(sizes.processes)
        for c in range(sizes.connections)
        for i in range(sizes.produce if not batch else sizes.batch)
        for j in range(max(batch, 1))
    }


def check_queue(r: redis.Redis, queue: str, expected: set[bytes]) -> None:
    got = r.lrange(queue, 0, -1)
    if len(got) != len(expected) or set(got) != expected:
        raise WrongResult(
            f"{queue}: {len(got)} events, {len(set(got))} distinct, expected {len(expected)}"
        )


def run_produce(
    pool: ProcessPoolExecutor, server: EmbeddedRedis, port: int, sizes: ApiSizes, batch: int
) -> float:
    """Requests/s (one event each), or events/s for batches of `batch`."""
    r = server.client()
    r.flushall()
    if batch:
        work = loads(sizes, "batch", port, count=sizes.batch, batch=batch)
    else:
        work = loads(sizes, "produce", port, count=sizes.produce)
    outcomes = run_clients(pool, work)
    check_queue(r, SIDE_QUEUE, expected_events(sizes, batch))
    if r.dbsize() != 1:
        raise WrongResult(f"keys other than {SIDE_QUEUE}: {r.keys()}")
    r.close()
    return per_second(outcomes)


def run_cycle(
    pool: ProcessPoolExecutor, server: EmbeddedRedis, port: int, sizes: ApiSizes
) -> float:
    """Tasks/s claimed and done; each task exactly once, its done event exactly once."""
    r = server.client()
    r.flushall()
    tasks = [f"trt/plant0/{i}" for i in range(sizes.tasks)]
    pipe = r.pipeline(transaction=False)
    for start in range(0, len(tasks), 5_000):
        chunk = tasks[start : start + 5_000]
        pipe.lpush(TODO, *chunk)
        pipe.zadd(TODO_SET, dict.fromkeys(chunk, 1))
    pipe.execute()
    cycles = [replace(load, queue=TODO) for load in loads(sizes, "cycle", port)]
    outcomes = run_clients(pool, cycles)
    done = [task for o in outcomes for task in o.tasks]
    if len(done) != len(tasks) or set(done) != set(tasks):
        raise WrongResult(f"{len(done)} tasks done, {len(set(done))} distinct, of {len(tasks)}")
    check_queue(r, INPUT, {t.encode() for t in tasks})  # the done queue
    left = {key: r.exists(key) for key in (TODO, TODO_SET, TODO + "/claims", TODO + "/failed")}
    left[TODO + "/claims/deadlines"] = r.exists(TODO + "/claims/deadlines")
    left[TODO + "/claims/attempts"] = r.exists(TODO + "/claims/attempts")
    if any(left.values()):
        raise WrongResult(f"left after the cycle: {[k for k, v in left.items() if v]}")
    r.close()
    return per_second(outcomes)


def rate_load(sizes: ApiSizes, port: int, seconds: float) -> Load:
    """The open-loop load: one process, single-event POSTs at `sizes.rate`/s."""
    count = int(sizes.rate * seconds)
    return Load("rate", HOST, port, SIDE_QUEUE, sizes.connections, count=count, rate=sizes.rate)


def percentiles(latencies_ms: list[float]) -> dict[str, float]:
    ordered = sorted(latencies_ms)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    return {"p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99), "max_ms": ordered[-1]}


def run_latency(
    pool: ProcessPoolExecutor, server: EmbeddedRedis, port: int, sizes: ApiSizes
) -> dict[str, float]:
    r = server.client()
    r.flushall()
    load = rate_load(sizes, port, sizes.rate_s)
    (outcome,) = run_clients(pool, [load])
    check_queue(r, SIDE_QUEUE, {f"p0/r/{i}".encode() for i in range(load.count)})
    r.close()
    return {"rate": sizes.rate, **percentiles(outcome.latencies_ms)}


@contextmanager
def running_with_http(server: EmbeddedRedis, workdir: Path) -> Iterator[int]:
    """`resc run` with its HTTP server: the watcher of bench.run's scenarios."""
    from bench.run import resc

    port = free_port()
    with resc(server, [EXAMPLE_RULE], workdir, http=http_config(port)):
        wait_http(port, None, 30)
        yield port


def run_backlog_once(
    pool: ProcessPoolExecutor | None,
    server: EmbeddedRedis,
    port: int,
    sizes: ApiSizes,
    load_s: float = 0.0,
) -> tuple[float, dict[str, float] | None]:
    """Backlog events/s; with `pool`, while its client posts at `sizes.rate`/s for
    `load_s` seconds (which must outlast the backlog), and the latencies it saw."""
    r = server.client()
    # Not FLUSHALL: resc runs on, and its instance's heartbeat and taken list stay.
    for key in list(r.scan_iter(count=1000)):
        if not key.startswith(TAKEN.encode()):
            r.delete(key)
    count = sizes.backlog
    preload(r, "bench/staging", 0, count)
    queues = list(expected_tasks("set", count))
    load = rate_load(sizes, port, load_s)
    future = None
    if pool is not None:
        future = pool.submit(client.run, replace(load, start_at=time.time() + 0.5))
        time.sleep(1.5)  # the load running steadily before the backlog starts

    def done() -> bool:
        pipe = r.pipeline(transaction=False)
        pipe.llen(INPUT)
        pipe.llen(TAKEN)
        for queue in queues:
            pipe.llen(queue)
        lengths = pipe.execute()
        return lengths[0] == 0 and lengths[1] == 0 and sum(lengths[2:]) >= count

    started_wall, started = time.time(), time.perf_counter()
    r.rename("bench/staging", INPUT)
    finished = wait_for(done, 600, f"{count} events")
    finished_wall = time.time()
    check_backlog(r, "set", count)
    latency = None
    if future is not None:
        outcome = future.result(timeout=600)
        if outcome.problems:
            raise WrongResult(f"HTTP load: {outcome.problems[:3]}")
        if not outcome.first_s < started_wall or not outcome.last_s > finished_wall:
            raise WrongResult("the HTTP load did not last as long as the backlog")
        check_queue(r, SIDE_QUEUE, {f"p0/r/{i}".encode() for i in range(load.count)})
        latency = percentiles(outcome.latencies_ms)
    r.close()
    return count / (finished - started), latency


@contextmanager
def running_beside_serve(server: EmbeddedRedis, workdir: Path) -> Iterator[int]:
    """`resc run` without its HTTP server, and `resc serve` as a process of its own."""
    from bench.run import resc

    with serving(server, workdir) as port, resc(server, [EXAMPLE_RULE], workdir):
        yield port


def run_backlog(
    server: EmbeddedRedis, workdir: Path, sizes: ApiSizes, separate: bool = False
) -> dict[str, Any]:
    """The backlog without and with HTTP load: on `resc run --http`, or with `separate`,
    on `resc run` beside a `resc serve` that takes the load."""
    quiet, loaded, p99 = [], [], []
    servers = running_beside_serve if separate else running_with_http
    with servers(server, workdir) as port, pool_of(1) as pool:
        for _ in range(sizes.runs):
            quiet.append(run_backlog_once(None, server, port, sizes)[0])
            # Three times the quiet backlog's time: the load covers it even when slowed.
            load_s = 2.0 + 3 * sizes.backlog / quiet[-1]
            rate, latency = run_backlog_once(pool, server, port, sizes, load_s)
            loaded.append(rate)
            assert latency is not None
            p99.append(latency["p99_ms"])
    q, lo = statistics.median(quiet), statistics.median(loaded)
    return {
        "quiet": q,
        "loaded": lo,
        "ratio": lo / q,
        "http_rate": sizes.rate,
        "http_p99_ms": statistics.median(p99),
    }


@contextmanager
def pool_of(processes: int) -> Iterator[ProcessPoolExecutor]:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
        yield pool


def median_of(runs: int, measure: Any) -> float:
    return statistics.median(measure() for _ in range(runs))


def run_all(
    server: EmbeddedRedis, workdir: Path, quick: bool, scenarios: set[str]
) -> dict[str, Any]:
    """The API scenarios among `scenarios`, printing each line of the table."""
    sizes = API_QUICK if quick else API_FULL
    results: dict[str, Any] = {}

    def show(name: str, value: float, unit: str) -> None:
        print(f"  {name:<18} {value:>10,.0f} {unit}", flush=True)

    with pool_of(sizes.processes) as pool:
        if "api_client" in scenarios:
            results["api_client"] = run_client_alone(pool, sizes)
            show("api_client", results["api_client"], "requests/s (the client alone)")
        needs_serve = {"api_produce", "api_batch", "api_cycle", "api_latency"} & scenarios
        if needs_serve:
            with serving(server, workdir) as port:
                if "api_produce" in scenarios:
                    results["api_produce"] = median_of(
                        sizes.runs, lambda: run_produce(pool, server, port, sizes, 0)
                    )
                    show("api_produce", results["api_produce"], "requests/s")
                if "api_batch" in scenarios:
                    results["api_batch"] = median_of(
                        sizes.runs, lambda: run_produce(pool, server, port, sizes, BATCH)
                    )
                    show("api_batch", results["api_batch"], f"events/s ({BATCH} per request)")
                if "api_cycle" in scenarios:
                    results["api_cycle"] = median_of(
                        sizes.runs, lambda: run_cycle(pool, server, port, sizes)
                    )
                    show("api_cycle", results["api_cycle"], "tasks/s (claim + done)")
                if "api_latency" in scenarios:
                    lat = results["api_latency"] = run_latency(pool, server, port, sizes)
                    print(
                        f"  api_latency at {sizes.rate}/s  p50 {lat['p50_ms']:.2f} ms  "
                        f"p90 {lat['p90_ms']:.2f} ms  p99 {lat['p99_ms']:.2f} ms  "
                        f"max {lat['max_ms']:.2f} ms",
                        flush=True,
                    )
    for name in ("api_backlog", "api_backlog_serve"):
        if name not in scenarios:
            continue
        b = results[name] = run_backlog(server, workdir, sizes, name == "api_backlog_serve")
        print(
            f"  {name:<18} {b['quiet']:>10,.0f} events/s quiet, "
            f"{b['loaded']:,.0f} under {b['http_rate']} requests/s "
            f"({b['ratio']:.0%}; HTTP p99 {b['http_p99_ms']:.2f} ms)",
            flush=True,
        )
    return results


SCENARIOS = [
    "api_client",
    "api_produce",
    "api_batch",
    "api_cycle",
    "api_latency",
    "api_backlog",
    "api_backlog_serve",
]
