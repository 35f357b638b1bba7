"""`resc failed` on a real Redis Cluster of three masters: the failed lists of watchers
and workers on different masters listed, requeued with their sets and deleted, each copy
by one script in its slot; a list whose keys are in several slots refused clearly."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.cluster import RedisCluster

from resc.connection.clients import cluster_client
from tests.cluster import ClusterTopology
from tests.conftest import make_config, run_resc, write_config

pytestmark = pytest.mark.server

# Three tags on the three masters of the test cluster (checked below).
INPUT, TODO, SET, OTHER = "{plant}/events", "{orders}/todo", "{orders}/todo-set", "{misc}/todo"


@pytest.fixture
def client(cluster: ClusterTopology) -> Iterator[RedisCluster]:
    made = cluster_client(cluster.url(), socket_timeout=5)
    yield made
    made.close()


def config(url: str, other_set: str = "{misc}/todo-set") -> dict[str, Any]:
    rules = [
        {"on": r"^a/(?P<n>\d+)$", "make": {"task": "t/${n}", "queue": TODO, "set": SET}},
        {"on": r"^b/(?P<n>\d+)$", "make": {"task": "u/${n}", "queue": OTHER, "set": other_set}},
    ]
    return make_config(url, [{"input_queue": INPUT, "rules": rules}])


def resc_failed(conf: Path, *args: str) -> dict[str, Any]:
    done = run_resc("failed", str(conf), "--json", *args)
    assert (done.returncode, done.stderr) == (0, "")
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def fill(client: RedisCluster) -> None:
    client.lpush(f"{INPUT}/failed", "a/1", "bad/2")
    client.hset(f"{INPUT}/failed/reasons", mapping={"a/1": "x", "bad/2": "no rule"})
    client.lpush(f"{TODO}/failed", "t/1", "t/2")
    client.hset(f"{TODO}/failed/reasons", mapping={"t/1": "boom", "t/2": "bang"})
    # t/2 was made again meanwhile: it is queued, so requeuing adds no second copy.
    client.zadd(SET, {"t/2": 5})
    client.lpush(TODO, "t/2")
    client.lpush(f"{OTHER}/failed", "u/7")
    client.hset(f"{OTHER}/failed/reasons", "u/7", "gone")


def test_failed_lists_on_three_masters_are_listed_requeued_and_deleted(
    cluster: ClusterTopology, client: RedisCluster, tmp_path: Path
):
    assert len({cluster.master_of(key).port for key in (INPUT, TODO, OTHER)}) == 3
    fill(client)
    conf = write_config(tmp_path, config(cluster.url()))
    listing = resc_failed(conf)
    lengths = {fl["name"]: fl["length"] for fl in listing["lists"]}
    assert lengths == {f"{INPUT}/failed": 2, f"{TODO}/failed": 2, f"{OTHER}/failed": 1}
    texts = {fl["name"]: [i["text"] for i in fl["items"]] for fl in listing["lists"]}
    assert texts[f"{TODO}/failed"] == ["t/1", "t/2"]

    moved = resc_failed(conf, "--requeue", "--all", "--list", f"{TODO}/failed")
    assert moved["lists"] == [
        {"name": f"{TODO}/failed", "requeued": 1, "already_queued": 1, "gone": 0}
    ]
    assert client.lrange(TODO, 0, -1) == [b"t/1", b"t/2"]
    assert client.zscore(SET, "t/2") == 5
    assert client.zscore(SET, "t/1") is not None
    assert client.exists(f"{TODO}/failed", f"{TODO}/failed/reasons") == 0

    moved = resc_failed(conf, "--requeue", "--all", "--list", f"{INPUT}/failed")
    assert moved["lists"] == [
        {"name": f"{INPUT}/failed", "requeued": 2, "already_queued": 0, "gone": 0}
    ]
    assert sorted(client.lrange(INPUT, 0, -1)) == [b"a/1", b"bad/2"]

    deleted = resc_failed(conf, "--delete", "--all", "--yes", "--list", f"{OTHER}/failed")
    assert deleted["lists"] == [{"name": f"{OTHER}/failed", "deleted": 1, "gone": 0}]
    assert client.exists(f"{OTHER}/failed", f"{OTHER}/failed/reasons") == 0


def test_a_failed_list_whose_set_is_in_another_slot_is_refused_clearly(
    cluster: ClusterTopology, client: RedisCluster, tmp_path: Path
):
    fill(client)
    conf = write_config(tmp_path, config(cluster.url(), other_set="misc-set"))
    done = run_resc("failed", str(conf), "--requeue", "--all", "--list", f"{OTHER}/failed")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "are not in one slot of the Redis Cluster" in done.stderr, done.stderr
    assert "misc-set" in done.stderr
    assert client.lrange(f"{OTHER}/failed", 0, -1) == [b"u/7"]
