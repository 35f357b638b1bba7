"""resc on a real Redis Cluster of three masters, with co-located results (every key of
a watcher and of its results under its input queue's hash tag): exactly one task per
event through a backlog, kill -9 of resc, and a master's failover; and a config with a
delayed task in another slot refused at start. (Cross-slot results:
test_cluster_outbox.py.)"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.cluster import RedisCluster

from resc.commands.run import _cluster_refusal
from resc.config.load import load_config
from resc.connection.clients import cluster_client
from resc.core.errors import RedisUnavailable
from resc.engine.daemon import Daemon
from resc.engine.store import Store
from tests.cluster import ClusterTopology
from tests.conftest import (
    drained,
    in_hand,
    make_config,
    resc_process,
    run_resc,
    running,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.server

INPUT, TAKEN, TODO, SEEN = "{plant}/events", "{plant}/events/taken", "{plant}/todo", "{plant}/seen"
# On another master than {plant} in the test cluster's three slot ranges.
OTHER_TODO = "{orders}/todo"


def backlog_config(
    url: str, with_set: bool = False, queue: str = TODO, delay: str | None = None
) -> dict[str, Any]:
    make: dict[str, Any] = {"task": "task/${n}", "queue": queue}
    if with_set:
        make["set"] = SEEN
    if delay is not None:
        make["delay"] = delay
    return make_config(
        url,
        [{"input_queue": INPUT, "rules": [{"on": r"^ev/(?P<n>\d+)$", "make": make}]}],
    )


@pytest.fixture
def client(cluster: ClusterTopology) -> Iterator[RedisCluster]:
    made = cluster_client(cluster.url(), socket_timeout=5)
    yield made
    made.close()


def preload(client: RedisCluster, count: int, first: int = 0) -> None:
    for start in range(first, first + count, 1000):
        client.lpush(INPUT, *(f"ev/{i}" for i in range(start, min(start + 1000, first + count))))


def assert_exactly_once(client: Any, count: int) -> None:
    tasks = Counter(client.lrange(TODO, 0, -1))
    assert len(tasks) == count, f"{count - len(tasks)} tasks missing"
    assert max(tasks.values()) == 1, f"duplicated: {[t for t, n in tasks.items() if n > 1][:5]}"
    assert set(tasks) == {f"task/{i}".encode() for i in range(count)}


@pytest.mark.parametrize("with_set", [False, True])
def test_a_co_located_backlog_gives_one_task_per_event(
    cluster: ClusterTopology, client: RedisCluster, tmp_path: Path, with_set: bool
):
    assert cluster.master_of(INPUT).port != cluster.master_of(OTHER_TODO).port
    preload(client, 3000)
    with running(backlog_config(cluster.url(), with_set), tmp_path):
        wait_until(lambda: client.llen(TODO) >= 3000 and drained(client, INPUT, TAKEN))
    assert_exactly_once(client, 3000)
    assert client.zcard(SEEN) == (3000 if with_set else 0)


def test_a_cluster_nodes_plain_url_runs_as_the_cluster(
    cluster: ClusterTopology, client: RedisCluster, tmp_path: Path
):
    # A node that does not serve {plant}: resc follows the cluster to the one that does.
    node = next(n for n in cluster.masters if n is not cluster.master_of(INPUT))
    preload(client, 500)
    with running(backlog_config(node.url, with_set=True), tmp_path):
        wait_until(lambda: client.llen(TODO) >= 500 and drained(client, INPUT, TAKEN))
    assert_exactly_once(client, 500)


def test_a_delayed_task_in_another_slot_is_refused_at_start(
    cluster: ClusterTopology, tmp_path: Path
):
    path = write_config(tmp_path, backlog_config(cluster.url(), queue=OTHER_TODO, delay="5s"))
    done = run_resc("run", str(path))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"resc: {path}:13: watchers[0].rules[0].make.queue: '{OTHER_TODO}' (slot 105) is not "
        f"in the slot of the input queue '{INPUT}' (slot 12555): in a Redis Cluster a delayed "
        f"task's queue must share its watcher's slot; give the queue the input queue's tag: "
        f'write queue: "{{plant}}/todo"',
        "resc: see `resc check` for what to write",
    ]


BACKLOG = 6000


def stop(process: subprocess.Popen[str]) -> str:
    """SIGTERM, then resc's log (it must exit with 0)."""
    process.send_signal(signal.SIGTERM)
    _, log = process.communicate(timeout=20)
    assert process.returncode == 0, log
    return log


@pytest.mark.parametrize("with_set", [False, True])
def test_sigkill_of_resc_twice_during_a_backlog_then_restart_gives_one_task_per_event(
    cluster: ClusterTopology, client: RedisCluster, tmp_path: Path, with_set: bool
):
    preload(client, BACKLOG)
    path = write_config(tmp_path, backlog_config(cluster.url(), with_set))
    caught_in_hand = 0
    for kill_at in (1_000, 3_000):
        process = resc_process(str(path))
        try:
            wait_until(lambda at=kill_at: client.llen(TODO) >= at, timeout_s=60)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        caught_in_hand += len(in_hand(client, TAKEN))
    assert caught_in_hand > 0
    process = resc_process(str(path))
    try:
        wait_until(
            lambda: client.llen(TODO) >= BACKLOG and drained(client, INPUT, TAKEN), timeout_s=60
        )
    finally:
        log = stop(process)
    # Nothing refused on the way: the scripts were there at the first commit.
    assert "Redis unavailable" not in log and "refused" not in log, log
    assert_exactly_once(client, BACKLOG)


def test_a_master_killed_during_a_backlog_loses_no_task(
    cluster_with_replicas: ClusterTopology, tmp_path: Path
):
    """kill -9 of the master of the watcher's slot, its replica promoted: one task per
    event still. Replication is asynchronous, so a commit or take acknowledged just
    before the kill may not have reached the replica; each is one script, replicated
    whole or not at all, and resc recovers its taken list from the new master, which
    replays exactly the events whose commits were lost (README, "What asynchronous
    replication can still lose"). The events were on the replica before the kill
    (WAIT): a producer's push lost with the old master is the one thing resc cannot
    replay."""
    topology = cluster_with_replicas
    client = cluster_client(topology.url(), socket_timeout=5)
    try:
        preload(client, BACKLOG)
        old = topology.master_of(INPUT)
        with old.plain() as plain:
            plain.execute_command("WAIT", 1, 5000)
        path = write_config(tmp_path, backlog_config(topology.url()))
        process = resc_process(str(path))
        try:
            wait_until(lambda: client.llen(TODO) >= 1000, timeout_s=60)
            topology.kill_master(old)
            client.close()
            client = cluster_client(topology.url(), socket_timeout=5)
            assert client.llen(INPUT) > 0  # the kill came in the middle of the backlog
            wait_until(
                lambda: (
                    drained(client, INPUT, TAKEN)
                    and {f"task/{i}".encode() for i in range(BACKLOG)}
                    <= set(client.lrange(TODO, 0, -1))
                ),
                timeout_s=90,
            )
        finally:
            log = stop(process)
        assert "Redis unavailable, retrying" in log  # resc saw the failover
        print(f"promoted in {topology.promotion_s:.1f} s")
        assert_exactly_once(client, BACKLOG)
    finally:
        client.close()


def test_delayed_tasks_are_pushed_when_due_on_a_cluster(
    cluster: ClusterTopology, client: RedisCluster, tmp_path: Path
):
    config = make_config(
        cluster.url(),
        [
            {
                "input_queue": INPUT,
                "rules": [{"on": r"^ev/(?P<n>\d+)$", "make": {"queue": TODO, "delay": "1s"}}],
            }
        ],
    )
    with running(config, tmp_path):
        client.lpush(INPUT, "ev/1", "ev/2")
        wait_until(lambda: drained(client, INPUT, TAKEN))
        assert client.llen(TODO) == 0
        assert client.smembers(f"{INPUT}/delayed-queues") == {TODO.encode()}
        wait_until(lambda: client.llen(TODO) == 2)
        wait_until(lambda: client.exists(f"{INPUT}/delayed-queues") == 0)
    assert sorted(client.lrange(TODO, 0, -1)) == [b"ev/1", b"ev/2"]


def test_stuck_set_members_expire_in_sets_on_every_master(
    cluster: ClusterTopology, client: RedisCluster, tmp_path: Path
):
    """Sets named with variables are scanned on each master: {a}, {b} and {c} live on
    three. (No event comes in: the make's queue is in the event's slot only for the
    sweep's sake, and the daemon runs here without `resc run`'s check.)"""
    tags = ("a", "b", "c")
    assert len({cluster.master_of(f"{{{t}}}").port for t in tags}) == 3
    for tag in tags:
        client.zadd(f"{{{tag}}}/set", {"job/1": 1, "job/2": 1})
        client.lpush(f"{{{tag}}}/todo", "job/2")  # queued: kept
    make = {"task": "job/${id}", "queue": "{${p}}/todo", "set": "{${p}}/set", "set_ttl": "1s"}
    config = make_config(
        cluster.url(),
        [{"input_queue": INPUT, "rules": [{"on": r"^(?P<p>\w)/(?P<id>\d+)$", "make": make}]}],
    )
    with running(config, tmp_path) as daemon:
        wait_until(lambda: daemon.expiry_stats.removed["{${p}}/set"] == 3)
    for tag in tags:
        assert client.zrange(f"{{{tag}}}/set", 0, -1) == [b"job/2"]


def test_a_reload_to_a_delayed_task_in_another_slot_is_refused_and_the_config_stays(
    cluster: ClusterTopology, client: RedisCluster, tmp_path: Path
):
    path = write_config(tmp_path, backlog_config(cluster.url()))
    daemon = Daemon(load_config(path), path, grace_period_s=5, refusal=_cluster_refusal)
    daemon.start()
    try:
        write_config(tmp_path, backlog_config(cluster.url(), queue=OTHER_TODO, delay="1s"))
        assert daemon.reload() is False
        client.lpush(INPUT, "ev/1")
        wait_until(lambda: client.lrange(TODO, 0, -1) == [b"task/1"])
        write_config(tmp_path, backlog_config(cluster.url(), with_set=True))
        assert daemon.reload() is True
    finally:
        daemon.stop.set()
        assert daemon.wait() == 0
    assert client.llen(OTHER_TODO) == 0


def test_a_store_follows_its_slot_to_the_new_master_after_a_failover(
    cluster_with_replicas: ClusterTopology,
):
    """A manual CLUSTER FAILOVER: the take blocked on the old master is told so
    (UNBLOCKED on Redis 7.0, MOVED on Valkey), the next command there gets MOVED: both
    are a lost connection; connect() again finds the new master and loads the scripts
    there (which it has not: NOSCRIPT otherwise)."""
    topology = cluster_with_replicas
    store = Store(topology.url())
    client = cluster_client(topology.url(), socket_timeout=5)
    try:
        store.connect()
        assert store.take(INPUT, f"{TAKEN}/i1", 10) == []
        old = topology.master_of(INPUT)
        replica = topology.replicas[topology.masters.index(old)]
        outcome: list[BaseException | bytes | None] = []

        def blocked_take() -> None:
            try:
                outcome.append(store.wait_take(INPUT, f"{TAKEN}/i1"))
            except BaseException as exc:
                outcome.append(exc)

        # wait_take waits BLOCK_TIMEOUT_S (1 s) at most: start one, then fail over.
        thread = threading.Thread(target=blocked_take)
        thread.start()
        time.sleep(0.2)
        with replica.plain() as plain:
            plain.execute_command("CLUSTER", "FAILOVER")
        # Every node, not only the new master, must know of the failover before connect()
        # asks one of them where the slot lives.
        topology.wait_promoted(replica)
        assert topology.master_of(INPUT) is replica
        thread.join(5)
        [taken] = outcome
        if taken is None:  # the failover came after the wait ended: the next take sees it
            with pytest.raises(RedisUnavailable) as info:
                store.take(INPUT, f"{TAKEN}/i1", 10)
            taken = info.value
        assert isinstance(taken, RedisUnavailable)
        assert "MOVED" in str(taken) or "UNBLOCKED" in str(taken)
        client.lpush(INPUT, "ev/1")
        store.connect()
        assert store.take(INPUT, f"{TAKEN}/i1", 10) == [b"ev/1"]
        with replica.plain() as plain:  # the scripts were loaded on the new master
            assert plain.execute_command("SCRIPT", "EXISTS", *store._sha.values()) == [1] * len(
                store._sha
            )
    finally:
        store.close()
        client.close()
