"""`resc status` on a real Redis Cluster of three masters: the configured queues, the
todo queues with their sets, workers and failed lists, and the keys a glob finds, read
from whichever master serves each."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

from resc.config.load import load_config
from resc.connection.clients import cluster_client
from resc.engine.expiry import ExpiryStats
from resc.ops.todo_metrics import TodoCollector
from tests.cluster import ClusterTopology
from tests.conftest import make_config, run_resc, write_config

pytestmark = pytest.mark.server

PLANT, ORDERS = "{plant}", "{orders}"


@pytest.fixture
def client(cluster: ClusterTopology) -> Iterator[RedisCluster]:
    made = cluster_client(cluster.url(), socket_timeout=5)
    yield made
    made.close()


def config(url: str) -> dict:
    def watcher(tag: str) -> dict:
        return {
            "input_queue": f"{tag}/events",
            "rules": [
                {
                    "on": r"^ev/(?P<n>\d+)$",
                    "make": {"task": "t/${n}", "queue": f"{tag}/todo", "set": f"{tag}/todo-set"},
                }
            ],
        }

    return make_config(url, [watcher(PLANT), watcher(ORDERS)])


def fill(client: RedisCluster) -> None:
    client.lpush(f"{PLANT}/events", "ev/1", "ev/2")
    client.lpush(f"{ORDERS}/events", "ev/3")
    client.lpush(f"{ORDERS}/events/taken", "ev/0")
    client.lpush(f"{PLANT}/events/failed", "bad")
    client.hset(f"{PLANT}/events/failed/reasons", "bad", "no rule")
    client.lpush(f"{PLANT}/todo", "t/1", "t/2", "t/3")
    client.zadd(f"{PLANT}/todo-set", {"t/1": 1, "t/2": 2, "t/3": 3})
    client.lpush(f"{ORDERS}/todo/failed", "t/8")
    # A worker that died holding t/9 on {orders}/todo.
    client.sadd(f"{ORDERS}/todo/workers", "ghost")
    client.lpush(f"{ORDERS}/todo/taken/ghost", "t/9")
    client.lpush("{misc}/a", "x")
    client.lpush("{misc}/b", "y", "z")


def test_status_reads_every_master(cluster: ClusterTopology, client: RedisCluster, tmp_path: Path):
    masters = {cluster.master_of(key).port for key in (PLANT, ORDERS, "{misc}")}
    assert len(masters) == 3, "the keys of the test are on three masters"
    fill(client)
    path = str(write_config(tmp_path, config(cluster.url())))
    done = run_resc("status", path, "--queue", "{misc}/*")
    assert (done.returncode, done.stderr) == (0, "")
    lines = done.stdout.splitlines()
    assert lines[:8] == [
        f"Redis {cluster.url()}",
        "KEY                     ROLE    LENGTH  NOTE",
        "{plant}/events          input        2",
        "{plant}/events/taken    taken        0",
        "{plant}/events/failed   failed       1  reasons: 1",
        "{orders}/events         input        1",
        "{orders}/events/taken   taken        1  oldest: age n/a (--watch measures it)",
        "{orders}/events/failed  failed       0  reasons: 0",
    ]
    assert [line.split() for line in lines[8:10]] == [
        ["{misc}/a", "scan", "1"],
        ["{misc}/b", "scan", "2"],
    ]

    done = run_resc("status", path, "--json")
    assert (done.returncode, done.stderr) == (0, "")
    data = json.loads(done.stdout)
    todo = {q["queue"]: q for q in data["todo"]}
    assert (todo["{plant}/todo"]["length"], todo["{plant}/todo"]["set_size"]) == (3, 3)
    assert todo["{plant}/todo"]["workers"] == []
    orders = todo["{orders}/todo"]
    assert (orders["length"], orders["failed"]) == (0, 1)
    assert [(w["id"], w["alive"], w["held"], w["tasks"]) for w in orders["workers"]] == [
        ("ghost", False, 1, ["t/9"])
    ]


def test_status_of_a_cluster_nodes_plain_url(
    cluster: ClusterTopology, client: RedisCluster, tmp_path: Path
):
    fill(client)
    path = str(write_config(tmp_path, config(cluster.masters[0].url)))
    done = run_resc("status", path, "--json")
    assert (done.returncode, done.stderr) == (0, "")
    lengths = {k["key"]: k["length"] for k in json.loads(done.stdout)["keys"]}
    assert lengths["{plant}/events"] == 2
    assert lengths["{orders}/events"] == 1


def test_the_todo_metrics_read_every_master(
    cluster: ClusterTopology, client: RedisCluster, tmp_path: Path
):
    fill(client)
    conf = load_config(write_config(tmp_path, config(cluster.url())))
    families = {
        family.name: {tuple(s.labels.values()): s.value for s in family.samples}
        for family in TodoCollector(lambda: conf, ExpiryStats()).collect()
    }
    assert families["resc_todo_tasks"] == {("{plant}/todo",): 3, ("{orders}/todo",): 0}
    assert families["resc_todo_failed"] == {("{plant}/todo",): 0, ("{orders}/todo",): 1}
    assert families["resc_todo_tasks_held"][("{orders}/todo",)] == 1
