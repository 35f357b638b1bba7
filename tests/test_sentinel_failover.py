"""resc through Redis Sentinel, on a real master, replica and three sentinels: a planned
failover and a master killed in the middle of a backlog leave exactly one task per
event on the new master, and nothing in hand."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import RedisServer, make_config, running, wait_until
from tests.topology import Topology, sentinel_topology

EVENTS = 20_000
TAKEN = "in/taken"


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    with sentinel_topology(tmp_path / "topology") as started:
        yield started


def _config(url: str, with_set: bool, batch: int = 100) -> dict[str, Any]:
    make: dict[str, Any] = {"task": "t${n}", "queue": "todo"}
    if with_set:
        make["set"] = "todo/set"
    rule = {"on": r"^e(?P<n>\d+)$", "make": make}
    watcher = {"input_queue": "in", "taken_queue": TAKEN, "batch": batch, "rules": [rule]}
    return make_config(url, [watcher])


def _push_backlog(master: RedisServer) -> None:
    """EVENTS events, on the master and its replica (WAIT): what a failover must keep."""
    with master.client() as client:
        for start in range(0, EVENTS, 1000):
            client.lpush("in", *(f"e{n}" for n in range(start, start + 1000)))
        assert client.execute_command("WAIT", 1, 10_000) == 1


def _in_hand(client: redis.Redis) -> int:
    """Events in the input queue and in every taken list (one per instance or one)."""
    lists = [k for k in client.scan_iter(match=f"{TAKEN}*") if client.type(k) == b"list"]
    return int(client.llen("in")) + sum(int(client.llen(k)) for k in lists)


def _watcher_connected(client: redis.Redis) -> bool:
    return any(c["name"] == "resc" for c in client.client_list())


def _done(client: redis.Redis) -> bool:
    try:
        return _in_hand(client) == 0 and client.llen("todo") >= EVENTS
    except redis.RedisError:
        return False


def _assert_one_task_per_event(client: redis.Redis, with_set: bool) -> None:
    expected = sorted(f"t{n}".encode() for n in range(EVENTS))
    assert sorted(client.lrange("todo", 0, -1)) == expected
    if with_set:
        assert sorted(client.zrange("todo/set", 0, -1)) == expected
    assert _in_hand(client) == 0
    assert client.llen("in/failed") == 0


@pytest.mark.timeout(180)
@pytest.mark.parametrize("with_set", [True, False], ids=["with a set", "without a set"])
def test_a_planned_failover_in_the_middle_of_a_backlog(
    topology: Topology, tmp_path: Path, with_set: bool
) -> None:
    old = topology.current_master()
    _push_backlog(old)
    # One event at a time: the backlog lasts longer than the failover (up to about a
    # second), also on a fast machine.
    config = _config(topology.url(), with_set, batch=1)
    with old.client() as before, running(config, tmp_path):
        wait_until(lambda: before.llen("todo") >= EVENTS // 50, 60)
        new = topology.failover()
        wait_until(lambda: topology.promoted(new), 30)
        with new.client() as after:
            # The switch came in the middle of the backlog.
            assert after.llen("in") > 0
            # resc leaves the old master while it still answers as a master: it does not
            # wait for the sentinels to demote it (some 10 s after the switch).
            wait_until(lambda: not _watcher_connected(before), 8)
            assert before.execute_command("ROLE")[0] == b"master"
            wait_until(lambda: _done(after), 120)
            _assert_one_task_per_event(after, with_set)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("with_set", [True, False], ids=["with a set", "without a set"])
def test_the_master_killed_in_the_middle_of_a_backlog(
    topology: Topology, tmp_path: Path, with_set: bool
) -> None:
    old = topology.current_master()
    _push_backlog(old)
    new = next(node for node in topology.nodes.values() if node is not old)
    with old.client() as before, running(_config(topology.url(), with_set), tmp_path):
        wait_until(lambda: before.llen("todo") >= EVENTS // 50, 60)
        old.kill()
        started = time.monotonic()
        wait_until(lambda: topology.promoted(new), 30)
        print(f"new master promoted {time.monotonic() - started:.1f} s after the kill")
        with new.client() as after:
            assert after.llen("in") > 0
            wait_until(lambda: _done(after), 120)
            _assert_one_task_per_event(after, with_set)
