"""Every Redis client of resc through a sentinel URL, on a real master, replica and three
sentinels: the daemon, the worker library, resc work, resc status, resc failed and the
HTTP API; a master pausing its clients; passwords never logged."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from resc.config.redis_url import SentinelUrl, parse_redis_url
from resc.connection.sentinel import tracker_for
from resc.core.errors import RedisUnavailable
from resc.dev.embedded import free_port
from resc.engine.store import Store
from resc.worker import AsyncWorker, Worker
from tests.conftest import (
    make_config,
    resc_process,
    run_resc,
    running,
    wait_until,
    write_config,
)
from tests.topology import MASTER_NAME, Topology, sentinel_topology

# The topology's servers follow RESC_TEST_SERVER: these run on Redis and on Valkey.
pytestmark = pytest.mark.server

RULES = [
    {
        "input_queue": "in",
        "rules": [{"on": r"^e(?P<n>\d+)$", "make": {"task": "t${n}", "queue": "todo"}}],
    }
]


@pytest.fixture(scope="module")
def shared_topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    # A master paused for 1.5 s answers no sentinel meanwhile: it is not failed over.
    with sentinel_topology(tmp_path_factory.mktemp("topology"), down_after_ms=5000) as started:
        yield started


@pytest.fixture
def topology(shared_topology: Topology) -> Iterator[Topology]:
    """The shared topology with an empty database on its master, whichever it is now."""
    wait_until(lambda: _writable(shared_topology), 30)
    with shared_topology.current_master().client() as client:
        client.flushall()
        client.execute_command("WAIT", 1, 5000)
    yield shared_topology


def _writable(topology: Topology) -> bool:
    try:
        with topology.current_master().client() as client:
            return client.execute_command("ROLE")[0] == b"master" and bool(client.set("w", 1))
    except (redis.RedisError, KeyError):
        return False


def test_passwords_of_the_master_and_of_the_sentinels_never_reach_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    with sentinel_topology(
        tmp_path / "topology", password="node-s3cret", sentinel_password="sentinel-s3cret"
    ) as topology:
        # A first sentinel that is down: resc logs it and asks the others.
        url = topology.url().replace(
            "redis+sentinel://:node-s3cret@", "redis+sentinel://:node-s3cret@127.0.0.1:1,"
        )
        with topology.master.client() as client, running(make_config(url, RULES), tmp_path):
            client.lpush("in", "e1", "e2")
            wait_until(lambda: client.llen("todo") == 2)
    shown = url.replace("node-s3cret", "***").replace("sentinel-s3cret", "***")
    assert shown in caplog.text
    assert "node-s3cret" not in caplog.text
    assert "sentinel-s3cret" not in caplog.text


def test_a_master_pausing_its_clients_is_waited_out(
    topology: Topology, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """CLIENT PAUSE WRITE, as a coordinated failover does: resc waits, with no error and
    no reconnection, and goes on when the pause ends."""
    caplog.set_level(logging.WARNING)
    events = 20_000
    master = topology.current_master()
    with master.client() as client, master.client() as admin:
        client.lpush("in", *(f"e{n}" for n in range(events)))
        with running(make_config(topology.url(), RULES), tmp_path) as daemon:
            wait_until(lambda: client.llen("todo") >= 1000, 30)
            admin.execute_command("CLIENT", "PAUSE", 1500, "WRITE")
            paused_at = client.llen("todo")
            threading.Event().wait(1.0)  # the pause itself, not a wait for resc
            assert client.llen("todo") == paused_at < events  # nothing written meanwhile
            wait_until(lambda: client.llen("todo") == events, 60)
            assert [stats.reconnects for _, stats in daemon.watchers()] == [0]
            assert topology.master_port() == master.port  # no failover meanwhile
        assert sorted(client.lrange("todo", 0, -1)) == sorted(
            f"t{n}".encode() for n in range(events)
        )
    assert "Redis unavailable" not in caplog.text


def test_the_worker_library_follows_a_planned_failover(topology: Topology):
    """Tasks done before the failover and after it, the ones after it on the new master
    while the old one still answers as a master."""
    old = topology.current_master()
    handled: list[str] = []
    worker = Worker(topology.url(), queue="todo", heartbeat_ttl_s=2.0, handler=handled.append)
    worker.start()
    try:
        with old.client() as before:
            before.lpush("todo", "a", "b")
            wait_until(lambda: before.llen("global/events") == 2)
            before.execute_command("WAIT", 1, 5000)
            new = topology.failover()
            wait_until(lambda: topology.promoted(new), 30)
            with new.client() as after:
                after.lpush("todo", "c", "d")
                wait_until(lambda: after.llen("global/events") == 4, 8)
                assert before.execute_command("ROLE")[0] == b"master"  # not demoted yet
                assert after.lrange("global/events", 0, -1) == [b"d", b"c", b"b", b"a"]
    finally:
        worker.stop()
        assert worker.wait(10)
    assert handled == ["a", "b", "c", "d"]


def test_resc_work_status_and_failed_take_a_sentinel_url(topology: Topology, tmp_path: Path):
    url = topology.url()
    config = write_config(tmp_path, make_config(url, RULES))
    with topology.current_master().client() as client:
        client.lpush("in", "e1", "bad")
        client.lpush("in/failed", "old")
        worker = resc_process("work", "--redis", url, "--queue", "todo", "--", "true")
        try:
            with running(make_config(url, RULES), tmp_path):
                wait_until(lambda: client.llen("global/events") == 1)
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(15) == 0
        status = run_resc("status", str(config), "--json")
        assert status.returncode == 0, status.stderr
        assert '"redis": "redis+sentinel://' in status.stdout
        failed = run_resc("failed", str(config), "--redis", url)
        assert failed.returncode == 0, failed.stderr
        assert "old" in failed.stdout


def test_the_http_api_takes_a_sentinel_url(topology: Topology, tmp_path: Path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = make_config(topology.url(), RULES, http={"listen": f"127.0.0.1:{port}"})
    process = resc_process("serve", str(write_config(tmp_path, config)))
    try:
        wait_until(lambda: _up(base), 30)
        assert httpx.post(base + "/v1/queues/in/events", content="e7").status_code == 202
        with topology.current_master().client() as client:
            assert client.lrange("in", 0, -1) == [b"e7"]
            client.lpush("todo", "t1")
        promise = httpx.post(base + "/v1/queues/todo/promises").json()
        assert promise["task"] == "t1"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0


def _up(base: str) -> bool:
    try:
        return httpx.get(base + "/readyz").status_code == 200
    except httpx.TransportError:
        return False


def test_the_asyncio_worker_takes_a_sentinel_url(topology: Topology):
    handled: list[str] = []

    async def handle(task: str) -> None:
        handled.append(task)
        if len(handled) == 3:
            worker.stop()

    worker = AsyncWorker(topology.url(), queue="todo", heartbeat_ttl_s=2.0, handler=handle)
    with topology.current_master().client() as client:
        client.lpush("todo", "a", "b", "c")
        asyncio.run(asyncio.wait_for(worker.run(signals=False), 30))
        assert client.lrange("global/events", 0, -1) == [b"c", b"b", b"a"]
    assert handled == ["a", "b", "c"]


def test_the_sentinels_are_asked_only_while_a_client_is_open(topology: Topology):
    def checking() -> bool:
        return any(t.name == f"sentinels of {MASTER_NAME}" for t in threading.enumerate())

    wait_until(lambda: not checking())
    store = Store(topology.url())
    store.connect()
    assert store.lengths(["in"]) == [0]
    assert checking()
    store.close()
    wait_until(lambda: not checking())


def test_a_server_that_is_no_master_is_refused_when_connecting(
    topology: Topology, monkeypatch: pytest.MonkeyPatch
):
    """Sentinels that name a replica (stale, or during a failover) give no connection:
    ROLE is checked, and the refusal is waited out as a lost connection."""
    replica = next(n for n in topology.nodes.values() if n is not topology.current_master())
    target = parse_redis_url(topology.url())
    assert isinstance(target, SentinelUrl)
    tracker = tracker_for(target)
    monkeypatch.setattr(tracker, "resolve", lambda: ("127.0.0.1", replica.port))
    store = Store(topology.url())
    try:
        with pytest.raises(RedisUnavailable) as info:
            store.connect()
    finally:
        store.close()
    assert f"127.0.0.1:{replica.port}, which the sentinels name as the master, is a " in str(
        info.value
    )
