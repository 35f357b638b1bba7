"""A Redis Cluster for tests: three masters (and optionally one replica each) on loopback
ports of this test process's range, each a real server process of the binary the tests
use, joined by resc.dev.cluster; and what the tests do to it (kill a master, wait for
its replica's promotion, find the master of a key).
"""

from __future__ import annotations

import time
from pathlib import Path

import redis

from resc.dev.cluster import NODE_ARGUMENTS, bus_is_free, form_cluster
from tests.conftest import RedisServer, _own_port, wait_until


class ClusterNode(RedisServer):
    """One cluster node: a RedisServer whose port and bus port are both free."""

    def __init__(self, folder: Path, *args: str) -> None:
        folder.mkdir(parents=True)
        super().__init__(
            folder,
            *NODE_ARGUMENTS,
            "--repl-diskless-sync-delay",
            "0",
            *args,
        )
        while not bus_is_free(self.port):
            self.port = _own_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def plain(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)

    def node_id(self) -> str:
        with self.plain() as client:
            return str(client.execute_command("CLUSTER", "MYID"))


class ClusterTopology:
    """Three masters sharing the 16384 slots in three ranges; with `replicas`, one
    replica of each master, which takes over when its master dies."""

    def __init__(self, folder: Path, replicas: bool = False, masters: int = 3) -> None:
        self.masters = [ClusterNode(folder / f"master{i}") for i in range(masters)]
        self.replicas = (
            [ClusterNode(folder / f"replica{i}") for i in range(masters)] if replicas else []
        )

    @property
    def nodes(self) -> list[ClusterNode]:
        return [*self.masters, *self.replicas]

    def url(self) -> str:
        """The redis+cluster:// URL naming every master as a startup node."""
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.masters)
        return f"redis+cluster://{hosts}"

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        for node in self.nodes:
            node.start()
        form_cluster(self.masters, self.replicas)

    def master_of(self, key: str) -> ClusterNode:
        """The node that serves the slot of `key` now."""
        with self.masters[0].plain() as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
        for node in self.nodes:
            if node.process is None:
                continue
            with node.plain() as client:
                for first, last, *_ in _slot_ranges(client):
                    if first <= slot <= last and _is_master(client):
                        return node
        raise AssertionError(f"no live master serves slot {slot}")

    def kill_master(self, node: ClusterNode, timeout_s: float = 20) -> ClusterNode:
        """kill -9 of a master, then wait until its replica is promoted and the cluster
        is usable again; the new master."""
        index = self.masters.index(node)
        replica = self.replicas[index]
        node.kill()
        started = time.monotonic()
        self.wait_promoted(replica, timeout_s)
        self.promotion_s = time.monotonic() - started
        self.masters[index], self.replicas[index] = replica, node
        return replica

    def wait_promoted(self, replica: ClusterNode, timeout_s: float = 20) -> None:
        """Wait until every live node sees `replica` as a master serving slots, and the
        cluster as usable: a client that asks any node for the slots then finds it."""
        replica_id = replica.node_id()

        def promoted() -> bool:
            try:
                for live in self.nodes:
                    if live.process is None:
                        continue
                    with live.plain() as client:
                        if "cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                            return False
                        fields = _node_line(client, replica_id)
                        if "master" not in fields[2] or len(fields) < 9:
                            return False
                return True
            except redis.RedisError:
                return False

        wait_until(promoted, timeout_s=timeout_s)

    def close(self) -> None:
        for node in self.nodes:
            node.kill()


def _is_master(client: redis.Redis) -> bool:
    return bool(client.info("replication").get("role") == "master")


def _node_line(client: redis.Redis, node_id: str) -> list[str]:
    """The fields of a node's line in CLUSTER NODES, as `client`'s node sees it."""
    for line in str(client.execute_command("CLUSTER", "NODES")).splitlines():
        fields = line.split()
        if fields[0] == node_id or (node_id == "myself" and "myself" in fields[2]):
            return fields
    return ["", "", ""]


def _slot_ranges(client: redis.Redis) -> list[list[int]]:
    ranges = []
    for part in _node_line(client, "myself")[8:]:
        if part.startswith("["):
            continue
        first, _, last = part.partition("-")
        ranges.append([int(first), int(last or first)])
    return ranges
