"""The test cluster (tests/cluster.py): three masters serving every slot, and a master's
replica taking over when the master is killed."""

from __future__ import annotations

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode as Startup
from redis.cluster import RedisCluster
from redis.retry import Retry

from tests.cluster import ClusterTopology

pytestmark = pytest.mark.server


def client_of(topology: ClusterTopology) -> RedisCluster:
    return RedisCluster(
        startup_nodes=[Startup("127.0.0.1", n.port) for n in topology.masters],
        retry=Retry(NoBackoff(), 0),
        socket_timeout=5,
    )


def test_three_masters_serve_every_slot(cluster):
    with cluster.masters[0].plain() as node:
        info = node.execute_command("CLUSTER", "INFO")
    assert "cluster_state:ok" in info
    assert "cluster_slots_assigned:16384" in info
    assert "cluster_size:3" in info
    client = client_of(cluster)
    try:
        for tag in ("a", "b", "c", "plant", "orders"):
            client.lpush(f"{{{tag}}}/events", "x")
        owners = {cluster.master_of(f"{{{tag}}}/events").port for tag in "abc"}
        assert len(owners) == 3  # these three tags are on three masters
        assert client.llen("{plant}/events") == 1
    finally:
        client.close()


def test_a_killed_master_is_replaced_by_its_replica(cluster_with_replicas):
    topology = cluster_with_replicas
    client = client_of(topology)
    try:
        client.lpush("{plant}/events", "kept")
        old = topology.master_of("{plant}/events")
        with old.plain() as plain:
            plain.execute_command("WAIT", 1, 5000)
        new = topology.kill_master(old)
        assert new is topology.master_of("{plant}/events")
        assert new is not old and old.process is None
        client.close()
        client = client_of(topology)
        assert client.lrange("{plant}/events", 0, -1) == [b"kept"]
    except redis.RedisError:
        raise
    finally:
        client.close()
