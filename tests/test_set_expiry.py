"""set_ttl: the daemon removes dedup set members older than it whose task is in no queue
and no worker's taken list, so that a worker that died before its ZREM does not block
the task for ever. Against a real Redis, a real daemon and real workers."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis

from resc.config.load import config_from_source
from resc.config.source import read_source
from resc.engine import expiry
from resc.engine.daemon import Daemon
from resc.engine.expiry import _SCRIPT
from resc.worker import Worker
from resc.worker import store as worker_store
from tests.conftest import RedisServer, make_config, running, wait_until, write_config


@pytest.fixture(autouse=True)
def quick_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_store, "TAKE_BLOCK_S", 0.1)


def config(url: str, make_ttl: Any = 1, **watcher: Any) -> dict[str, Any]:
    """todo-set with set_ttl make_ttl (None: none), trt/${plant}/set with 1s."""
    make: dict[str, Any] = {"task": "job/${id}", "queue": "todo", "set": "todo-set"}
    if make_ttl is not None:
        make["set_ttl"] = make_ttl
    plants = {
        "task": "job/${id}",
        "queue": "trt/${plant}/todo",
        "set": "trt/${plant}/set",
        "set_ttl": "1s",
    }
    rules = [
        {"on": r"^ok/(?P<id>\d+)$", "make": make},
        {"on": r"^plant/(?P<plant>\w+)/(?P<id>\d+)$", "make": plants},
    ]
    return make_config(url, [{"input_queue": "in", "rules": rules, **watcher}])


def old(r: redis.Redis, key: str, *members: str) -> None:
    r.zadd(key, {m: time.time() - 100 for m in members})


def test_a_stuck_member_is_removed_and_the_task_can_be_made_again(r, redis_server, tmp_path):
    # job/1 was taken by a worker that died before its ZREM: it is in no list.
    old(r, "todo-set", "job/1")
    with running(config(redis_server.url), tmp_path) as daemon:
        wait_until(lambda: r.zscore("todo-set", "job/1") is None)
        # Counted once the set's sweep is over, just after the ZREM.
        wait_until(lambda: dict(daemon.expiry_stats.removed) == {"todo-set": 1})
        r.lpush("in", "ok/1")
        wait_until(lambda: r.lrange("todo", 0, -1) == [b"job/1"])
    assert r.zscore("todo-set", "job/1") is not None


def test_members_whose_task_is_queued_taken_or_young_are_kept(r, redis_server, tmp_path):
    old(r, "todo-set", "job/queued", "job/taken")
    r.zadd("todo-set", {"job/young": time.time() + 1000})
    # Another worker's taken list, as resc.worker keeps it, its heartbeat alive.
    r.sadd("todo/workers", "w1")
    r.set("todo/heartbeat/w1", "elsewhere", px=60_000)
    r.lpush("todo/taken/w1", "job/taken")
    held: list[str] = []
    release = threading.Event()

    def handle(task: str) -> None:
        held.append(task)
        release.wait(10)

    worker = Worker(
        redis_server.url,
        queue="todo",
        set="todo-set",
        zrem="after",
        done_queue=None,
        handler=handle,
        heartbeat_ttl_s=2,
        worker_id="w2",
    )
    with running(config(redis_server.url), tmp_path) as daemon:
        worker.start()
        try:
            # The worker holds job/77, which its set keeps (zrem after), for longer
            # than set_ttl; job/queued waits behind it.
            r.lpush("in", "ok/77")
            wait_until(lambda: held == ["job/77"])
            old(r, "todo-set", "job/77")
            r.lpush("todo", "job/queued")
            # Two stuck members, one added after the first is gone: a later sweep ran
            # and kept the others.
            old(r, "todo-set", "job/stuck1")
            wait_until(lambda: r.zscore("todo-set", "job/stuck1") is None)
            old(r, "todo-set", "job/stuck2")
            wait_until(lambda: r.zscore("todo-set", "job/stuck2") is None)
            assert sorted(r.zrange("todo-set", 0, -1)) == [
                b"job/77",
                b"job/queued",
                b"job/taken",
                b"job/young",
            ]
            wait_until(lambda: daemon.expiry_stats.removed["todo-set"] == 2)
        finally:
            release.set()
            worker.stop()
            assert worker.wait(10)
    # Done with zrem after: the worker removed it itself.
    assert r.zscore("todo-set", "job/77") is None


def test_sets_named_with_variables_are_scanned(r, redis_server, tmp_path):
    old(r, "trt/A/set", "job/1", "job/2")
    old(r, "trt/B/set", "job/3")
    r.lpush("trt/A/todo", "job/2")
    old(r, "trt/A/other", "job/4")  # no set of the config
    with running(config(redis_server.url, make_ttl=None), tmp_path) as daemon:
        wait_until(lambda: daemon.expiry_stats.removed["trt/${plant}/set"] == 2)
        assert r.zrange("trt/A/set", 0, -1) == [b"job/2"]
        assert r.exists("trt/B/set") == 0
        assert r.zrange("trt/A/other", 0, -1) == [b"job/4"]
        # No set_ttl for todo-set: it is left alone.
        old(r, "todo-set", "job/5")
        old(r, "trt/C/set", "job/6")
        wait_until(lambda: r.exists("trt/C/set") == 0)
        assert r.zrange("todo-set", 0, -1) == [b"job/5"]


def test_the_watchers_set_ttl_applies_and_a_reload_changes_it(r, redis_server, tmp_path):
    path = write_config(tmp_path, config(redis_server.url, make_ttl=None))
    daemon = Daemon(config_from_source(read_source(path)), path, grace_period_s=5)
    old(r, "todo-set", "job/1")
    daemon.start()
    waiting = threading.Thread(target=daemon.wait)
    waiting.start()
    try:
        time.sleep(1.5)  # three sweeps of the other set
        assert r.zrange("todo-set", 0, -1) == [b"job/1"]
        write_config(tmp_path, config(redis_server.url, make_ttl=None, set_ttl="1s"))
        daemon.reload_requested.set()
        wait_until(lambda: r.zscore("todo-set", "job/1") is None)
    finally:
        daemon.stop.set()
        waiting.join(15)
    assert daemon.expiry_stats.removed["todo-set"] == 1


def test_a_wrong_typed_set_fails_the_sweep_and_the_daemon_goes_on(r, redis_server, tmp_path):
    r.set("todo-set", "not a zset")
    with running(config(redis_server.url), tmp_path) as daemon:
        wait_until(lambda: daemon.expiry_stats.failed_sweeps >= 1)
        r.lpush("in", "plant/A/1")
        wait_until(lambda: r.lrange("trt/A/todo", 0, -1) == [b"job/1"])
        r.delete("todo-set")
        old(r, "todo-set", "job/9")
        wait_until(lambda: r.exists("todo-set") == 0)


def test_the_script_refuses_when_a_worker_joined_since_the_ids_were_read(r):
    script = r.register_script(_SCRIPT)
    old(r, "s", "t")
    r.sadd("q/workers", "w1", "w2")
    keys = ["s", "q", "q/workers", "q/taken/w1"]
    assert script(keys=keys, args=["t", time.time(), "w1"]) == -1
    r.lpush("q/taken/w2", "t")
    assert script(keys=[*keys, "q/taken/w2"], args=["t", time.time(), "w1", "w2"]) == 0
    r.delete("q/taken/w2")
    # Refreshed meanwhile (a newer score): kept.
    assert script(keys=keys[:3], args=["t", time.time() - 200]) == 0
    r.delete("q/workers")
    assert script(keys=keys[:3], args=["t", time.time()]) == 1
    assert r.exists("s") == 0
    r.set("q", "x")
    old(r, "s", "t")
    with pytest.raises(redis.ResponseError, match="q holds a string, not a list"):
        script(keys=keys[:3], args=["t", time.time()])
    assert r.zrange("s", 0, -1) == [b"t"]


def test_set_ttl_needs_a_set_that_names_its_queue(tmp_path):
    from resc.core.errors import ConfigError

    conf = make_config(
        "redis://127.0.0.1:1/0",
        [
            {
                "input_queue": "in",
                "rules": [
                    {
                        "on": r"^(?P<p>\w+)$",
                        "make": {"queue": "q/${p}", "set": "one-set", "set_ttl": "1h"},
                    }
                ],
            }
        ],
    )
    with pytest.raises(ConfigError) as info:
        config_from_source(read_source(write_config(tmp_path, conf)))
    assert (
        "set_ttl needs a set whose name holds every variable of the queue's: the set lacks p"
        in (info.value.problems[0])
    )


def test_the_sweep_waits_out_a_redis_restart(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    client = server.client()
    try:
        with running(config(server.url), tmp_path) as daemon:
            old(client, "todo-set", "job/1")
            wait_until(lambda: client.exists("todo-set") == 0)
            server.kill()
            wait_until(lambda: daemon.expiry_stats.failed_sweeps >= 1)
            server.start()
            old(client, "todo-set", "job/2")
            wait_until(lambda: client.exists("todo-set") == 0)
            wait_until(lambda: daemon.expiry_stats.removed["todo-set"] == 2)
    finally:
        client.close()
        server.close()


def test_bounded_sweeps_reach_every_set_and_member_in_turn(r, redis_server, tmp_path, monkeypatch):
    monkeypatch.setattr(expiry, "MOST_MEMBERS", 2)
    monkeypatch.setattr(expiry, "MOST_SETS", 1)
    monkeypatch.setattr(expiry, "SCAN_COUNT", 1)
    # The oldest members are all queued: a sweep that always began with them would
    # never reach the stuck one behind them.
    queued = [f"job/q{n}" for n in range(5)]
    r.zadd("todo-set", {t: n for n, t in enumerate(queued)})
    r.zadd("todo-set", {"job/stuck": 10})
    r.lpush("todo", *queued)
    # Every set stays (with a queued task): a scan that always began again would never
    # reach the sets behind the first one.
    plants = "ABCDEFGH"
    for plant in plants:
        old(r, f"trt/{plant}/set", "job/1", "job/2")
        r.lpush(f"trt/{plant}/todo", "job/2")

    def swept() -> bool:
        return all(r.zrange(f"trt/{p}/set", 0, -1) == [b"job/2"] for p in plants)

    with running(config(redis_server.url), tmp_path) as daemon:
        wait_until(lambda: r.zscore("todo-set", "job/stuck") is None, timeout_s=30)
        wait_until(swept, timeout_s=30)
        wait_until(lambda: daemon.expiry_stats.removed == {"todo-set": 1, "trt/${plant}/set": 8})
    assert sorted(r.zrange("todo-set", 0, -1)) == [t.encode() for t in queued]
