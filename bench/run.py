"""The benchmark: resc against its own private Redis, on this machine.

    python -m bench            full run: medians of 3, prints a table, writes JSON
    python -m bench --quick    a few seconds: small counts, fails only on wrong results

Scenarios:
  backlog   N events pre-loaded; time until every task is queued and the input and taken
            queues are empty (events/s). Variants: the example rule with a set, without a
            set, 10 rules of which one matches, one rule with 3 makes.
  latency   events pushed one at a time at fixed rates; a consumer BRPOPs the todo
            queues; milliseconds from LPUSH to receipt, for resc and for the original's
            protocol (both clocks and the original's loop in C: bench/latency.c).
  ceiling   Redis alone doing the same per-event writes in one Lua call per batch
            (bench/ceiling.lua), fed back to back: what this Redis can do here.
  backlog_2x  backlog_set shared by two resc processes on one config (--instance ids).
  memory    RSS of the resc process before and after many events.
  original  the original resc's protocol re-enacted: one event at a time, seven round
            trips each (BRPOPLPUSH, ZSCORE, ZADD, LPUSH, PUBLISH, LREM, PUBLISH).
  api_*     the HTTP API under a keep-alive load client (bench/api.py).
  fetch_*   a rule that fetches, against a local web service (bench/fetch.py).
  cluster_* co-located and cross-slot backlogs on a 3-master Redis Cluster the bench
            starts, beside one node, and the cost of waiting for replicas (bench/cluster.py).

Every run checks its result (exact task counts, no duplicates, queues empty) and a wrong
result is an error, never a number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from resc import __version__
from resc.dev.embedded import EmbeddedRedis

PLANTS = 10
INPUT, TAKEN = "global/events", "global/taken"
EXAMPLE_RULE = {
    "name": "compute on acquisition",
    "on": r"^acq/(?P<process_id>\w+)/(?P<product_id>\w+)$",
    "make": {
        "task": "trt/${process_id}/${product_id}",
        "queue": "trt/${process_id}/todo-queue",
        "set": "trt/${process_id}/todo-set",
    },
}


class WrongResult(Exception):
    """A run whose result is wrong: no number may be reported from it."""


@dataclass(frozen=True)
class Sizes:
    backlog: int
    runs: int
    latency_rates: tuple[int, ...]
    latency_s: float
    memory_events: int


FULL = Sizes(
    backlog=100_000,
    runs=3,
    latency_rates=(1_000, 2_000, 5_000),
    latency_s=5.0,
    memory_events=1_000_000,
)
QUICK = Sizes(backlog=5_000, runs=1, latency_rates=(1_000,), latency_s=0.5, memory_events=20_000)


def rules_for(variant: str) -> list[dict[str, Any]]:
    if variant == "set":
        return [EXAMPLE_RULE]
    if variant == "noset":
        make = {k: v for k, v in EXAMPLE_RULE["make"].items() if k != "set"}
        return [{**EXAMPLE_RULE, "make": make}]
    if variant == "10rules":
        others = [
            {"name": f"other {i}", "on": rf"^other{i}/(?P<x>\w+)$", "make": {"queue": f"q{i}"}}
            for i in range(9)
        ]
        return [*others[:5], EXAMPLE_RULE, *others[5:]]
    if variant == "3makes":
        make = EXAMPLE_RULE["make"]
        makes = [
            make,
            {"task": "a/${product_id}", "queue": "trt/${process_id}/a-queue"},
            {"task": "b/${product_id}", "queue": "trt/${process_id}/b-queue", "set": "b-set"},
        ]
        return [{**EXAMPLE_RULE, "make": makes}]
    raise ValueError(variant)


def expected_tasks(variant: str, count: int) -> dict[str, set[bytes]]:
    """Queue -> the exact tasks it must hold after `count` events."""
    queues: dict[str, set[bytes]] = {}
    for i in range(count):
        plant = f"plant{i % PLANTS}"
        queues.setdefault(f"trt/{plant}/todo-queue", set()).add(f"trt/{plant}/{i}".encode())
        if variant == "3makes":
            queues.setdefault(f"trt/{plant}/a-queue", set()).add(f"a/{i}".encode())
            queues.setdefault(f"trt/{plant}/b-queue", set()).add(f"b/{i}".encode())
    return queues


def event(i: int) -> bytes:
    return f"acq/plant{i % PLANTS}/{i}".encode()


def preload(client: redis.Redis, key: str, first: int, count: int) -> None:
    pipe = client.pipeline(transaction=False)
    chunk = 5_000
    for start in range(first, first + count, chunk):
        pipe.lpush(key, *(event(i) for i in range(start, min(start + chunk, first + count))))
    pipe.execute()


def in_hand(client: redis.Redis) -> int:
    """Events in resc's hands: in its instances' taken lists (`global/taken/<id>`) or in
    the plain taken queue."""
    lists = [TAKEN, *client.scan_iter(match=TAKEN + "/*", _type="list")]
    return sum(client.llen(name) for name in lists)


def check_backlog(client: redis.Redis, variant: str, count: int) -> None:
    for queue in (INPUT, INPUT + "/failed"):
        if client.llen(queue):
            raise WrongResult(f"{queue} holds {client.llen(queue)} events")
    if in_hand(client):
        raise WrongResult(f"{in_hand(client)} events still in hand")
    for queue, tasks in expected_tasks(variant, count).items():
        got = client.lrange(queue, 0, -1)
        if len(got) != len(tasks) or set(got) != tasks:
            raise WrongResult(
                f"{queue}: {len(got)} tasks, {len(set(got))} distinct, expected {len(tasks)}"
            )


@contextmanager
def resc(
    server: EmbeddedRedis,
    rules: list[dict[str, Any]],
    workdir: Path,
    batch: int | None = None,
    http: dict[str, Any] | None = None,
    concurrency: int | None = None,
    instance: str | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """resc running as a child process on a one-watcher config, ready to take events;
    with `http` (the config's http section), its HTTP server too; with `instance`, under
    that instance id (beside other resc already running on the same config)."""
    watcher: dict[str, Any] = {"input_queue": INPUT, "taken_queue": TAKEN, "rules": rules}
    if batch is not None:
        watcher["batch"] = batch
    if concurrency is not None:
        watcher["concurrency"] = concurrency
    config: dict[str, Any] = {"redis": {"url": server.url}, "watchers": [watcher]}
    if http is not None:
        config["http"] = http
    path = workdir / "bench.json"
    path.write_text(json.dumps(config))
    client = server.client()

    def waiting() -> int:
        return sum(
            c.get("name") == "resc" and c.get("cmd") == "blmove" for c in client.client_list()
        )

    already = waiting()
    command = [sys.executable, "-m", "resc", *(["--instance", instance] if instance else [])]
    process = subprocess.Popen([*command, str(path)], env={**os.environ, "RESC_LOG": "warn"})
    try:
        deadline = time.monotonic() + 30
        # Ready: its watcher's connection waits in BLMOVE on the empty input queue.
        while waiting() <= already:
            if process.poll() is not None or time.monotonic() > deadline:
                raise WrongResult("resc did not start")
            time.sleep(0.01)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        if process.wait(30) != 0:
            raise WrongResult(f"resc exited with status {process.returncode}")
        client.close()


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise WrongResult(f"timed out waiting for {what}")
        time.sleep(0.002)
    return time.perf_counter()


def run_backlog(
    server: EmbeddedRedis,
    variant: str,
    count: int,
    workdir: Path,
    batch: int | None = None,
    instances: int = 1,
) -> float:
    """Events per second for a pre-loaded backlog of `count` events, shared by
    `instances` resc processes on one config."""
    client = server.client()
    client.flushall()
    preload(client, "bench/staging", 0, count)
    queues = list(expected_tasks(variant, count))
    with ExitStack() as running:
        for n in range(instances):
            ident = f"bench-{n}" if instances > 1 else None
            running.enter_context(resc(server, rules_for(variant), workdir, batch, instance=ident))
        started = time.perf_counter()
        client.rename("bench/staging", INPUT)  # all at once, waking resc's BLMOVE

        def done() -> bool:
            pipe = client.pipeline(transaction=False)
            pipe.llen(INPUT)
            pipe.llen(TAKEN)
            for queue in queues:
                pipe.llen(queue)
            lengths = pipe.execute()
            return (
                lengths[0] == 0
                and lengths[1] == 0
                and sum(lengths[2:]) >= count * (3 if variant == "3makes" else 1)
            )

        finished = wait_for(done, 600, f"{count} events")
    check_backlog(client, variant, count)
    client.close()
    return count / (finished - started)


def run_ceiling(server: EmbeddedRedis, count: int, batch: int, publish: bool) -> float:
    """Events per second Redis manages alone for the example rule's writes."""
    client = server.client()
    client.flushall()
    preload(client, INPUT, 0, count)
    script = client.register_script((Path(__file__).parent / "ceiling.lua").read_text())
    pipe = client.pipeline(transaction=False)
    calls = -(-count // batch)
    score = int(time.time())
    script(keys=[INPUT, TAKEN], args=[batch, score, int(publish)])  # loads the script
    for _ in range(calls - 1):
        script(keys=[INPUT, TAKEN], args=[batch, score, int(publish)], client=pipe)
    started = time.perf_counter()
    pipe.execute()
    elapsed = time.perf_counter() - started
    check_backlog(client, "set", count)
    client.close()
    # The first call ran before the clock started: count only the events after it.
    return (count - batch) / elapsed


def run_original(
    server: EmbeddedRedis, count: int, fetch: Callable[[str], str] | None = None
) -> float:
    """Events per second of the original's one-event-at-a-time protocol, as it sends it;
    with `fetch`, each event first fetches (product id -> the id answered), in turn."""
    client = server.client()
    client.flushall()
    preload(client, INPUT, 0, count)
    started = time.perf_counter()
    for _ in range(count):
        event = client.brpoplpush(INPUT, TAKEN, 1)
        plant, product = event.decode().split("/")[1:]
        if fetch is not None:
            product = fetch(product)
        task, todo_set = f"trt/{plant}/{product}", f"trt/{plant}/todo-set"
        if client.zscore(todo_set, task) is None:
            client.zadd(todo_set, {task: int(time.time())})
            client.lpush(f"trt/{plant}/todo-queue", task)
            client.publish("events", f"{TAKEN} TRIGGER {event.decode()} -> {task}")
        client.lrem(TAKEN, 1, event)
        client.publish("events", f"{TAKEN} DONE {event.decode()}")
    elapsed = time.perf_counter() - started
    check_backlog(client, "set", count)
    client.close()
    return count / elapsed


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise WrongResult("no VmRSS")


def run_memory(server: EmbeddedRedis, count: int, workdir: Path) -> dict[str, float]:
    """resc's RSS after a warm-up and after `count` more events (noset: no growing sets)."""
    client = server.client()
    client.flushall()
    warmup, chunk = 10_000, 50_000
    queues = list(expected_tasks("noset", 1))
    with resc(server, rules_for("noset"), workdir) as process:
        preload(client, INPUT, 0, warmup)
        wait_for(lambda: client.llen(INPUT) == 0 and in_hand(client) == 0, 120, "warm-up")
        for queue in expected_tasks("noset", PLANTS):
            client.delete(queue)
        before = rss_mb(process.pid)
        pushed = 0
        while pushed < count:
            size = min(chunk, count - pushed)
            preload(client, INPUT, warmup + pushed, size)
            pushed += size
            wait_for(lambda: client.llen(INPUT) < chunk // 2, 300, "the backlog to shrink")
        wait_for(lambda: client.llen(INPUT) == 0 and in_hand(client) == 0, 300, "the end")
        after = rss_mb(process.pid)
    total = sum(client.llen(q) for q in expected_tasks("noset", PLANTS))
    if total != count:
        raise WrongResult(f"memory run: {total} tasks for {count} events")
    del queues
    client.close()
    return {
        "events": count,
        "rss_before_mb": before,
        "rss_after_mb": after,
        "growth_mb": after - before,
    }


def median_of(runs: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(runs))


SCENARIOS = ["original", "backlog", "backlog_2x", "latency", "ceiling", "memory"]


def main(argv: list[str] | None = None) -> int:
    from bench import api, cluster, fetch, latency  # they build on this module's scenarios

    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small and fast; correctness only")
    parser.add_argument(
        "--json",
        metavar="PATH",
        help="where to write the results "
        "(default: bench/results/latest.json, or quick.json with --quick)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="SCENARIO",
        choices=[*SCENARIOS, *api.SCENARIOS, *fetch.SCENARIOS, *cluster.SCENARIOS],
        help="run only these scenarios",
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    scenarios = set(args.only or [*SCENARIOS, *api.SCENARIOS, *fetch.SCENARIOS, *cluster.SCENARIOS])
    results: dict[str, Any] = {
        "resc": __version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "quick": args.quick,
    }
    try:
        with EmbeddedRedis(prefer="path") as server, tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            info = server.client().info("server")
            results["redis"] = f"{Path(server.binary).name} {info.get('redis_version')}"
            print(
                f"resc {__version__} on {results['redis']}, {os.cpu_count()} cpus"
                f"{' (quick: correctness only)' if args.quick else ''}",
                flush=True,
            )
            if "original" in scenarios:
                results["original"] = run_original(server, sizes.backlog // 5)
                print(f"  {'original':<18} {results['original']:>10,.0f} events/s", flush=True)
            if "ceiling" in scenarios:
                for publish in (False, True):
                    name = "ceiling_publish" if publish else "ceiling"
                    results[name] = median_of(
                        sizes.runs, lambda p=publish: run_ceiling(server, sizes.backlog, 100, p)
                    )
                    print(f"  {name:<18} {results[name]:>10,.0f} events/s", flush=True)
            if "backlog" in scenarios:
                for variant in ("set", "noset", "10rules", "3makes"):
                    name = f"backlog_{variant}"
                    results[name] = median_of(
                        sizes.runs, lambda v=variant: run_backlog(server, v, sizes.backlog, workdir)
                    )
                    ratio = (
                        f"  {results[name] / results['ceiling']:.0%} of ceiling"
                        if "ceiling" in results
                        else ""
                    )
                    if "original" in results:
                        ratio += f", {results[name] / results['original']:.0f}x original"
                    print(f"  {name:<18} {results[name]:>10,.0f} events/s{ratio}", flush=True)
            if "backlog_2x" in scenarios:
                results["backlog_2x"] = median_of(
                    sizes.runs,
                    lambda: run_backlog(server, "set", sizes.backlog, workdir, instances=2),
                )
                print(
                    f"  {'backlog_2x':<18} {results['backlog_2x']:>10,.0f} events/s "
                    "(backlog_set shared by two resc processes on one config)",
                    flush=True,
                )
            if "latency" in scenarios:
                results["latency"] = latency.run_all(
                    server, workdir, sizes.latency_rates, sizes.latency_s, sizes.runs
                )
                print("\n".join(latency.table(results["latency"])), flush=True)
            if "memory" in scenarios:
                results["memory"] = run_memory(server, sizes.memory_events, workdir)
                mem = results["memory"]
                print(
                    f"  memory             {mem['rss_before_mb']:.1f} MB -> "
                    f"{mem['rss_after_mb']:.1f} MB after {mem['events']:,} events "
                    f"(+{mem['growth_mb']:.1f} MB)",
                    flush=True,
                )
            results.update(api.run_all(server, workdir, args.quick, scenarios))
            results.update(fetch.run_all(server, workdir, args.quick, scenarios))
            results.update(cluster.run_all(workdir, scenarios, sizes.backlog, sizes.runs))
    except WrongResult as exc:
        print(f"bench: WRONG RESULT, no numbers reported: {exc}", file=sys.stderr)
        return 1
    except latency.LatencyError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    default = Path(__file__).parent / "results" / ("quick.json" if args.quick else "latest.json")
    path = Path(args.json) if args.json else default
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {path}")
    return 0
