"""The cluster scenarios: resc on a Redis Cluster of three masters that the bench starts
(resc.dev.cluster, as the tests' is), beside the same config on
one node.

  cluster_backlog   N events pre-loaded, split over three watchers whose input queues
                    are tagged for the three masters (`{p0}/events`...), each event's
                    task co-located with it (`{p0}/todo`, set `{p0}/todo-set`); time until
                    every task is queued and every input and taken list is empty
                    (events/s), on the cluster and on one node with the same config.
  cluster_cross     the same, each event's task in the next tag's queue and set, on
                    another master: committed through the outbox on the cluster.
  cluster_wait      cluster_cross on three masters with a replica each, without and with
                    redis.wait_replicas 1: what waiting for a replica costs.

Every run checks its result exactly, as bench/run.py's do.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import redis
from redis.cluster import RedisCluster

from bench.run import WrongResult, wait_for
from resc.connection.clients import cluster_client
from resc.dev.cluster import NODE_ARGUMENTS, bus_is_free, form_cluster
from resc.dev.embedded import EmbeddedRedis, port_is_free

SCENARIOS = ["cluster_backlog", "cluster_cross", "cluster_wait"]
# One tag per master of the three slot ranges (0-5460, 5461-10921, 10922-16383).
TAGS = ("p3", "p2", "p0")


# Node ports, and their bus ports 10000 above, below Linux's ephemeral range (32768 and
# up): a port the system hands out to outgoing connections could be taken between the
# check and the node's bind. Also clear of the test suite's ports (12000-19999, buses
# 22000-29999), as the test suite runs the bench's quick mode beside its own clusters.
_NODE_PORTS = range(20_000, 22_000)


def _port_with_bus() -> int:
    """A free port P whose cluster bus port P + 10000 is free too."""
    for port in random.sample(_NODE_PORTS, len(_NODE_PORTS)):
        if port_is_free(port) and bus_is_free(port):
            return port
    raise WrongResult(f"no free port for a cluster node in {_NODE_PORTS}")


class LocalCluster:
    """Three masters on loopback, sharing the slots in three ranges (resc.dev.cluster),
    with a replica each when `replicas`."""

    def __init__(self, masters: int = 3, replicas: bool = False) -> None:
        self.nodes = [
            EmbeddedRedis(*NODE_ARGUMENTS, prefer="path")
            for _ in range(masters * (2 if replicas else 1))
        ]
        self.masters = self.nodes[:masters]
        for node in self.nodes:
            node.port = _port_with_bus()
            node.url = f"redis://127.0.0.1:{node.port}/0"

    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.masters)

    def __enter__(self) -> LocalCluster:
        try:
            for node in self.nodes:
                node.start()
            form_cluster(self.masters, self.nodes[len(self.masters) :])
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for node in self.nodes:
            node.close(at_once=True)

    def __exit__(self, *exc: object) -> None:
        self.close()


def _target(tag: str, cross: bool) -> str:
    """The tag of the queue that a watcher's events make their task in: its own, or
    (cross-slot) the next one's, on another master."""
    return TAGS[(TAGS.index(tag) + 1) % len(TAGS)] if cross else tag


def config(url: str, cross: bool = False, wait_replicas: int = 0) -> dict[str, Any]:
    """Three watchers, one per tag, each making its event's task in its own slot (or,
    `cross`, in the next tag's)."""
    watchers = [
        {
            "input_queue": f"{{{tag}}}/events",
            "rules": [
                {
                    "on": r"^acq/(?P<product_id>\w+)$",
                    "make": {
                        "task": f"trt/{tag}/${{product_id}}",
                        "queue": f"{{{_target(tag, cross)}}}/todo",
                        "set": f"{{{_target(tag, cross)}}}/todo-set",
                    },
                }
            ],
        }
        for tag in TAGS
    ]
    return {"redis": {"url": url, "wait_replicas": wait_replicas}, "watchers": watchers}


def expected(count: int, cross: bool = False) -> dict[str, set[bytes]]:
    """Todo queue -> its exact tasks, for `count` events spread over the tags."""
    queues: dict[str, set[bytes]] = {f"{{{tag}}}/todo": set() for tag in TAGS}
    for i in range(count):
        tag = TAGS[i % len(TAGS)]
        queues[f"{{{_target(tag, cross)}}}/todo"].add(f"trt/{tag}/{i}".encode())
    return queues


Client = redis.Redis | RedisCluster


def _preload(client: Client, count: int) -> None:
    chunk = 5_000
    for t, tag in enumerate(TAGS):
        ids = range(t, count, len(TAGS))
        for start in range(0, len(ids), chunk):
            client.lpush(
                f"{{{tag}}}/staging", *(f"acq/{i}".encode() for i in ids[start : start + chunk])
            )


def _in_hand(client: Client) -> int:
    total = 0
    for tag in TAGS:
        names = client.scan_iter(match=f"{{{tag}}}/events/taken*", _type="list")
        total += sum(int(client.llen(name)) for name in names)  # type: ignore[arg-type]
    return total


def _check(client: Client, count: int, cross: bool) -> None:
    for tag in TAGS:
        for queue in (f"{{{tag}}}/events", f"{{{tag}}}/events/failed"):
            if client.llen(queue):
                raise WrongResult(f"{queue} holds {client.llen(queue)} events")
    if _in_hand(client):
        raise WrongResult(f"{_in_hand(client)} events still in hand")
    for queue, tasks in expected(count, cross).items():
        got = client.lrange(queue, 0, -1)
        if len(got) != len(tasks) or set(got) != tasks:  # type: ignore[arg-type]
            raise WrongResult(
                f"{queue}: {len(got)} tasks, {len(set(got))} distinct, expected {len(tasks)}"  # type: ignore[arg-type]
            )


def _taking(masters: list[EmbeddedRedis]) -> bool:
    """Every input queue's master has resc waiting in BLMOVE (on one node: three)."""
    waiting = 0
    for node in masters:
        with node.client() as client:
            waiting += sum(
                c.get("name") == "resc" and c.get("cmd") == "blmove" for c in client.client_list()
            )
    return waiting >= len(TAGS)


@contextmanager
def _resc(
    url: str, masters: list[EmbeddedRedis], workdir: Path, cross: bool, wait_replicas: int
) -> Iterator[None]:
    path = workdir / "bench-cluster.json"
    path.write_text(json.dumps(config(url, cross, wait_replicas)))
    process = subprocess.Popen(
        [sys.executable, "-m", "resc", str(path)], env={**os.environ, "RESC_LOG": "warn"}
    )
    try:
        deadline = time.monotonic() + 30
        while not _taking(masters):
            if process.poll() is not None or time.monotonic() > deadline:
                raise WrongResult("resc did not start")
            time.sleep(0.01)
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        if process.wait(30) != 0:
            raise WrongResult(f"resc exited with status {process.returncode}")


def run_backlog(
    url: str,
    masters: list[EmbeddedRedis],
    client: Client,
    count: int,
    workdir: Path,
    cross: bool = False,
    wait_replicas: int = 0,
) -> float:
    """Events per second for a backlog of `count` events over the three watchers."""
    for node in masters:
        with node.client() as plain:
            plain.flushall()
            if wait_replicas:
                plain.execute_command("WAIT", wait_replicas, 5000)
    _preload(client, count)
    with _resc(url, masters, workdir, cross, wait_replicas):
        started = time.perf_counter()
        for tag in TAGS:  # each rename wakes that watcher's BLMOVE
            client.rename(f"{{{tag}}}/staging", f"{{{tag}}}/events")

        def done() -> bool:
            inputs = sum(int(client.llen(f"{{{tag}}}/events")) for tag in TAGS)  # type: ignore[arg-type]
            tasks = sum(int(client.llen(f"{{{tag}}}/todo")) for tag in TAGS)  # type: ignore[arg-type]
            return inputs == 0 and tasks >= count

        finished = wait_for(done, 600, f"{count} events")
        wait_for(lambda: _in_hand(client) == 0, 30, "the taken lists to empty")
    _check(client, count, cross)
    return count / (finished - started)


def _medians(
    cluster: LocalCluster,
    runs: int,
    count: int,
    workdir: Path,
    runs_of: dict[str, tuple[bool, int]],
) -> dict[str, float]:
    """Per name, the median of `runs` backlogs on the cluster with its (cross, wait
    replicas)."""
    from bench.run import median_of

    client = cluster_client(cluster.url(), socket_timeout=10)
    try:
        return {
            name: median_of(
                runs,
                partial(
                    run_backlog, cluster.url(), cluster.masters, client, count, workdir, *variant
                ),
            )
            for name, variant in runs_of.items()
        }
    finally:
        client.close()


def run_all(workdir: Path, scenarios: set[str], count: int, runs: int) -> dict[str, Any]:
    """The cluster scenarios among `scenarios`: the same backlogs on one node and on the
    cluster, medians of `runs`."""
    from bench.run import median_of

    results: dict[str, Any] = {}
    variants = [(name, name == "cluster_cross") for name in ("cluster_backlog", "cluster_cross")]
    wanted = [(name, cross) for name, cross in variants if name in scenarios]
    if wanted:
        with EmbeddedRedis(prefer="path") as node, node.client() as one:
            for name, cross in wanted:
                results[f"{name}_one_node"] = median_of(
                    runs, partial(run_backlog, node.url, [node], one, count, workdir, cross)
                )
        with LocalCluster() as cluster:
            runs_of = {name: (cross, 0) for name, cross in wanted}
            results.update(_medians(cluster, runs, count, workdir, runs_of))
        for name, cross in wanted:
            one_node, on_cluster = results[f"{name}_one_node"], results[name]
            kind = "cross-slot, through the outbox" if cross else "co-located"
            print(
                f"  {name:<18} {on_cluster:>10,.0f} events/s on 3 masters, "
                f"{one_node:,.0f} on one node ({on_cluster / one_node:.2f}x; 3 watchers, {kind})",
                flush=True,
            )
    if "cluster_wait" in scenarios:
        with LocalCluster(replicas=True) as cluster:
            runs_of = {f"cluster_wait_{acks}": (True, acks) for acks in (0, 1)}
            results.update(_medians(cluster, runs, count, workdir, runs_of))
        without, waiting = results["cluster_wait_0"], results["cluster_wait_1"]
        print(
            f"  {'cluster_wait':<18} {waiting:>10,.0f} events/s with wait_replicas 1, "
            f"{without:,.0f} without ({waiting / without:.2f}x; cross-slot, 3 masters with a "
            "replica each)",
            flush=True,
        )
    return results
