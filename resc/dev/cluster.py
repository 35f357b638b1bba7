"""A Redis Cluster on loopback from private servers (resc.dev.embedded), for the tests
and the bench: the masters share the 16384 slots in equal ranges (CLUSTER
ADDSLOTSRANGE), meet (CLUSTER MEET), each replica follows its master (CLUSTER
REPLICATE). No redis-cli needed.

A node on port P also listens on P + 10000, its cluster bus: both must be free.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial

import redis

from resc.dev.embedded import EmbeddedRedis, port_is_free

SLOTS = 16384
BUS_OFFSET = 10000
# The server arguments of a cluster node; a node fails over after a second of silence.
NODE_ARGUMENTS = (
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "1000",
)


def bus_is_free(port: int) -> bool:
    """Whether the cluster bus port of a node on `port` is free (and in range)."""
    return port + BUS_OFFSET <= 65535 and port_is_free(port + BUS_OFFSET)


def form_cluster(
    masters: Sequence[EmbeddedRedis],
    replicas: Sequence[EmbeddedRedis] = (),
    timeout_s: float = 30,
) -> None:
    """Join started nodes into one cluster, the i-th replica following the i-th master;
    returns once every node sees the cluster as usable and every replica is in sync.
    TimeoutError if that takes longer than `timeout_s`."""
    share = SLOTS // len(masters)
    for i, node in enumerate(masters):
        last = SLOTS - 1 if i == len(masters) - 1 else (i + 1) * share - 1
        with node.client() as client:
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * share, last)
    nodes = [*masters, *replicas]
    with nodes[0].client() as first:
        for node in nodes[1:]:
            first.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
    deadline = time.monotonic() + timeout_s
    for master, replica in zip(masters, replicas, strict=False):
        with master.client(decode_responses=True) as client:
            master_id = str(client.execute_command("CLUSTER", "MYID"))
        with replica.client(decode_responses=True) as client:
            # A replica can follow only a master it has heard of.
            _wait(partial(_knows, client, master_id), deadline)
            client.execute_command("CLUSTER", "REPLICATE", master_id)
    for node in nodes:
        _wait(partial(_ready, node, len(nodes), node in replicas), deadline)


def _knows(client: redis.Redis, node_id: str) -> bool:
    nodes = client.execute_command("CLUSTER", "NODES")  # type: ignore[no-untyped-call, unused-ignore]
    return node_id in str(nodes)


def _ready(node: EmbeddedRedis, count: int, replica: bool) -> bool:
    """The node sees the cluster as usable, every node known, and (a replica) its
    master's link up."""
    try:
        with node.client(decode_responses=True) as client:
            info = str(client.execute_command("CLUSTER", "INFO"))
            if "cluster_state:ok" not in info or f"cluster_known_nodes:{count}" not in info:
                return False
            if replica:
                return bool(client.info("replication").get("master_link_status") == "up")
            return True
    except redis.RedisError:
        return False


def _wait(predicate: Callable[[], object], deadline: float) -> None:
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the cluster did not form in time")
        time.sleep(0.02)
