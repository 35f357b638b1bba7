"""The worker library's guarantees when things go wrong: handlers that raise anything,
taking threads that die, a worker cut off for longer than its TTL, a Redis restart that
loses the data, requeues that keep the dedup set, keys of the wrong type."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from resc.core.errors import RedisUnavailable, StoreError
from resc.dev.embedded import free_port
from resc.worker import TaskFailed, WorkerError
from resc.worker.tasks import TaskLoop
from tests.conftest import RedisServer, wait_until
from tests.test_worker import DONE, QUEUE, SET, child_worker, failed_reasons, new_worker, working
from tests.test_worker import quick_takes as quick_takes  # the autouse fixture


def events(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [rec.getMessage() for rec in caplog.records if text in rec.getMessage()]


class Exotic(BaseException):
    """Neither an Exception nor SystemExit."""


@pytest.mark.parametrize(
    ("raised", "reason"),
    [(SystemExit(3), "SystemExit: 3"), (Exotic("odd"), "Exotic: odd")],
    ids=["SystemExit", "BaseException"],
)
def test_a_handler_raising_any_base_exception_retries_then_fails_and_work_goes_on(
    r, redis_server, raised: BaseException, reason: str
):
    handled: list[str] = []

    def handle(task: str) -> None:
        if task == "bad":
            raise raised
        handled.append(task)

    worker = new_worker(redis_server, handle, retries=1)
    r.lpush(QUEUE, "bad", "good")
    with working(worker):
        wait_until(lambda: r.llen(DONE) == 1)
    assert failed_reasons(r, f"{QUEUE}/failed") == {b"bad": [(reason, 2)]}
    assert handled == ["good"]
    assert r.lrange(DONE, 0, -1) == [b"good"]


def test_a_taking_thread_that_dies_stops_the_worker_and_gives_its_task_back(
    r, redis_server, monkeypatch: pytest.MonkeyPatch
):
    def take_then_die(self: TaskLoop) -> None:
        while self._take() is None:
            pass

    monkeypatch.setattr(TaskLoop, "run", take_then_die)
    worker = new_worker(redis_server, lambda task: None, heartbeat_ttl_s=30, worker_id="w")
    r.lpush(QUEUE, "t")
    worker.start()
    with pytest.raises(WorkerError, match=r"a taking thread died: worker w #0"):
        worker.wait(10)
    assert r.lrange(QUEUE, 0, -1) == [b"t"]
    assert r.keys(f"{QUEUE}/*") == []  # no heartbeat left alive, nothing taken


def test_a_worker_cut_off_past_its_ttl_takes_nothing_until_it_is_registered_again(
    r, redis_server, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.WARNING, logger="resc.worker")
    handled: list[str] = []
    worker = new_worker(redis_server, handled.append, heartbeat_ttl_s=0.6, worker_id="w")
    heartbeat = f"{QUEUE}/heartbeat/w"
    cut_off = threading.Event()
    real_beat, real_take = worker.store.beat, worker.store.take
    unregistered_takes: list[bool] = []

    def beat(*args: object) -> tuple[bool, bool]:
        if cut_off.is_set():
            raise RedisUnavailable("refreshing the heartbeat: connection refused")
        return real_beat(*args)  # type: ignore[arg-type]

    def take() -> bytes | None:
        if not r.exists(heartbeat) or not r.sismember(f"{QUEUE}/workers", "w"):
            unregistered_takes.append(True)
        return real_take()

    worker.store.beat = beat  # type: ignore[method-assign]
    worker.store.take = take  # type: ignore[method-assign]
    with working(worker):
        wait_until(lambda: r.exists(heartbeat))
        cut_off.set()
        wait_until(lambda: not r.exists(heartbeat))
        # What a reaper does to a worker whose heartbeat expired.
        assert worker.store.reap("w") == 0
        r.lpush(QUEUE, "t")
        time.sleep(0.5)  # several take periods: none may take while unregistered
        assert r.lrange(QUEUE, 0, -1) == [b"t"]
        cut_off.clear()
        wait_until(lambda: r.llen(DONE) == 1)
    assert unregistered_takes == []
    assert handled == ["t"]
    assert len(events(caplog, "heartbeat expired while Redis was out of reach")) == 1
    assert events(caplog, "Redis lost") == []


def test_a_reaper_finds_a_taken_list_of_a_worker_that_is_not_registered(r, redis_server):
    handled: list[str] = []
    # Taken by a worker that was reaped while alive and then died: not in the registry.
    r.lpush(f"{QUEUE}/taken/ghost", "t")
    r.lpush(f"{QUEUE}/taken/alive", "busy")
    r.set(f"{QUEUE}/heartbeat/alive", "another host", px=30_000)
    worker = new_worker(redis_server, handled.append)
    with working(worker):
        wait_until(lambda: r.llen(DONE) == 1)
    assert handled == ["t"]
    assert r.exists(f"{QUEUE}/taken/ghost") == 0
    assert r.lrange(f"{QUEUE}/taken/alive", 0, -1) == [b"busy"]


def test_the_search_for_taken_lists_matches_the_queue_name_literally(r, redis_server):
    queue = "q[1]*"
    r.lpush("q1x/taken/ghost", "not of this queue")
    r.lpush(f"{queue}/taken/ghost", "t")
    worker = new_worker(redis_server, lambda task: None, queue=queue)
    with working(worker):
        wait_until(lambda: r.llen(DONE) == 1)
    assert r.lrange("q1x/taken/ghost", 0, -1) == [b"not of this queue"]


def test_a_redis_restart_that_lost_the_data_is_logged_as_such(
    tmp_path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.WARNING, logger="resc.worker")
    server = RedisServer(tmp_path)
    server.start()
    client = server.client()
    worker = new_worker(server, lambda task: None, heartbeat_ttl_s=3.0, worker_id="w")
    try:
        with working(worker):
            wait_until(lambda: client.exists(f"{QUEUE}/heartbeat/w"))
            server.kill()
            server.start()
            wait_until(lambda: client.exists(f"{QUEUE}/heartbeat/w"))
            assert client.smembers(f"{QUEUE}/workers") == {b"w"}
    finally:
        client.close()
        server.close()
    assert len(events(caplog, "Redis lost this worker's heartbeat and registration")) == 1
    assert events(caplog, "expired") == []


# --- requeues keep the dedup set (zrem before) -----------------------------------------


def test_a_failing_task_leaves_the_set_entry_of_a_copy_queued_again_meanwhile(r, redis_server):
    def requeue_then_fail(task: str) -> None:
        # What resc does with a new event for the task while it runs.
        assert r.zadd(SET, {task: 5}, nx=True) == 1
        r.lpush(QUEUE, task)
        worker.stop()
        raise TaskFailed("no")

    worker = new_worker(redis_server, requeue_then_fail, set=SET)
    r.zadd(SET, {"trt/1": 1})
    r.lpush(QUEUE, "trt/1")
    with working(worker):
        wait_until(lambda: r.llen(f"{QUEUE}/failed") == 1)
    assert r.zscore(SET, "trt/1") == 5.0
    assert r.zadd(SET, {"trt/1": 6}, nx=True) == 0  # the next event pushes nothing
    assert r.lrange(QUEUE, 0, -1) == [b"trt/1"]


@pytest.mark.parametrize("copy_queued", [False, True], ids=["alone", "copy-queued"])
def test_a_task_given_back_keeps_the_set_consistent(r, redis_server, copy_queued: bool):
    failing = threading.Event()

    def broken(task: str) -> None:
        if copy_queued and not failing.is_set():
            r.zadd(SET, {task: 5}, nx=True)
            r.lpush(QUEUE, task)
        failing.set()
        raise RuntimeError("boom")

    worker = new_worker(redis_server, broken, set=SET, retry_delay_s=30)
    r.zadd(SET, {"trt/1": 1})
    r.lpush(QUEUE, "trt/1")
    worker.start()
    assert failing.wait(5)
    worker.stop()
    assert worker.wait(5)
    assert r.zscore(SET, "trt/1") is not None
    assert r.zadd(SET, {"trt/1": 6}, nx=True) == 0
    assert r.lrange(QUEUE, 0, -1) == [b"trt/1"]


@pytest.mark.parametrize(
    ("entry", "queued", "expected_queue"),
    [
        (False, [], [b"trt/1"]),  # zrem before: the entry went at the take
        (True, [b"trt/1"], [b"trt/1"]),  # a copy queued again meanwhile
        (True, [], [b"trt/1"]),  # zrem after, or killed between the take and the ZREM
    ],
    ids=["entry-gone", "copy-queued", "entry-kept"],
)
@pytest.mark.parametrize("path", ["reap", "join"])
def test_reaping_and_rejoining_keep_the_set_consistent(
    r, redis_server, path: str, entry: bool, queued: list[bytes], expected_queue: list[bytes]
):
    r.lpush(f"{QUEUE}/taken/dead", "trt/1")
    r.sadd(f"{QUEUE}/workers", "dead")
    if entry:
        r.zadd(SET, {"trt/1": 1})
    if queued:
        r.lpush(QUEUE, *queued)
    worker = new_worker(redis_server, lambda task: None, set=SET, worker_id="dead")
    worker.store.connect()
    try:
        if path == "reap":
            assert worker.store.reap("dead") == 1
        else:
            assert worker.store.join("dead", 1000, "here") == 1
    finally:
        worker.store.close()
    assert r.lrange(QUEUE, 0, -1) == expected_queue
    assert r.zadd(SET, {"trt/1": 6}, nx=True) == 0
    assert r.llen(f"{QUEUE}/taken/dead") == 0


# --- keys of the wrong type: refused before any write ---------------------------------


@pytest.mark.parametrize("script", ["release", "reap", "join"])
def test_a_queue_of_the_wrong_type_keeps_the_task_in_the_taken_list(r, redis_server, script: str):
    r.lpush(f"{QUEUE}/taken/w", "t")
    r.set(QUEUE, "not a list")
    worker = new_worker(redis_server, lambda task: None, worker_id="w")
    worker.store.connect()
    calls = {
        "release": lambda: worker.store.release(b"t"),
        "reap": lambda: worker.store.reap("w", leaving=True),
        "join": lambda: worker.store.join("w", 1000, "here"),
    }
    try:
        with pytest.raises(StoreError, match=f"{QUEUE} holds a string, not a list"):
            calls[script]()
    finally:
        worker.store.close()
    assert r.lrange(f"{QUEUE}/taken/w", 0, -1) == [b"t"]
    assert r.get(QUEUE) == b"not a list"


def test_a_set_of_the_wrong_type_keeps_the_task_in_the_taken_list(r, redis_server):
    r.lpush(f"{QUEUE}/taken/w", "t")
    r.set(SET, "not a zset")
    worker = new_worker(redis_server, lambda task: None, worker_id="w", set=SET)
    worker.store.connect()
    try:
        with pytest.raises(StoreError, match=f"{SET} holds a string, not a zset"):
            worker.store.release(b"t")
    finally:
        worker.store.close()
    assert r.lrange(f"{QUEUE}/taken/w", 0, -1) == [b"t"]
    assert r.exists(QUEUE) == 0


def test_a_second_signal_to_run_gives_the_task_back_and_exits_130(r, redis_server):
    child = child_worker(redis_server, "block", worker_id="w", ttl_s=5)
    r.lpush(QUEUE, "t")
    try:
        wait_until(lambda: r.lrange("started", 0, -1) == [b"t"])
        child.send_signal(signal.SIGTERM)
        child.send_signal(signal.SIGTERM)  # a moment later: the same stop
        time.sleep(0.6)
        assert child.poll() is None  # still finishing the task in hand
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=10)
    finally:
        child.kill()
    assert child.returncode == 130, err
    assert err.count("second signal: giving the tasks in hand back and exiting") == 1
    assert r.lrange(QUEUE, 0, -1) == [b"t"]
    assert r.keys(f"{QUEUE}/*") == []


def test_each_failed_copy_of_a_task_keeps_its_own_record(r, redis_server):
    # A reason written as a plain string, as before records, is kept as the oldest one.
    r.lpush(f"{QUEUE}/failed", "t")
    r.hset(f"{QUEUE}/failed/reasons", "t", "an old reason")

    def reject(task: str) -> None:
        raise TaskFailed(f"no {r.llen(f'{QUEUE}/failed')}")

    worker = new_worker(redis_server, reject)
    r.lpush(QUEUE, "t")
    with working(worker):
        wait_until(lambda: r.llen(f"{QUEUE}/failed") == 2)
        r.lpush(QUEUE, "t")
        wait_until(lambda: r.llen(f"{QUEUE}/failed") == 3)
    assert failed_reasons(r, f"{QUEUE}/failed") == {
        b"t": [("an old reason", None), ("no 1", 1), ("no 2", 1)]
    }


def test_a_worker_never_reaps_itself_even_when_its_heartbeat_is_gone(r, redis_server):
    release = threading.Event()
    worker = new_worker(redis_server, lambda task: release.wait(), heartbeat_ttl_s=30)
    taken = f"{QUEUE}/taken/{worker.worker_id}"
    r.lpush(QUEUE, "t")
    with working(worker):
        try:
            wait_until(lambda: r.llen(taken) == 1)
            r.delete(f"{QUEUE}/heartbeat/{worker.worker_id}")  # registered, not beating
            worker._reap()  # a round of its reaper, now
            assert r.lrange(taken, 0, -1) == [b"t"]
            assert r.llen(QUEUE) == 0
        finally:
            release.set()
    assert r.lrange(DONE, 0, -1) == [b"t"]


@pytest.fixture(scope="module")
def server_without_lpos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis with no LPOS, as before 6.0.6."""
    server = RedisServer(tmp_path_factory.mktemp("no-lpos"), "--rename-command", "LPOS", "")
    server.start()
    yield server
    server.kill()


@pytest.mark.parametrize(
    ("entry", "queued", "expected_queue"),
    [
        (True, [b"other", b"trt/1", b"more"], [b"other", b"trt/1", b"more"]),
        (True, [b"other"], [b"other", b"trt/1"]),  # pushed where it is taken first
    ],
    ids=["copy-queued", "entry-kept"],
)
@pytest.mark.parametrize("path", ["release", "reap", "join"])
def test_requeues_keep_the_set_consistent_on_a_redis_without_lpos(
    server_without_lpos: RedisServer,
    path: str,
    entry: bool,
    queued: list[bytes],
    expected_queue: list[bytes],
):
    r = server_without_lpos.client()
    r.flushall()
    with pytest.raises(redis.ResponseError, match="unknown command"):
        r.lpos(QUEUE, "x")
    r.lpush(f"{QUEUE}/taken/dead", "trt/1")
    r.zadd(SET, {"trt/1": 1})
    r.rpush(QUEUE, *queued)
    worker = new_worker(server_without_lpos, lambda task: None, set=SET, worker_id="dead")
    worker.store.connect()
    try:
        calls = {
            "release": lambda: worker.store.release(b"trt/1"),
            "reap": lambda: worker.store.reap("dead"),
            "join": lambda: worker.store.join("dead", 1000, "here"),
        }
        assert calls[path]() == 1
    finally:
        worker.store.close()
    assert r.lrange(QUEUE, 0, -1) == expected_queue
    assert r.llen(f"{QUEUE}/taken/dead") == 0
    r.close()


# --- failovers --------------------------------------------------------------------------


def test_a_worker_waits_out_its_server_turning_replica_and_back(tmp_path):
    # An old master in a failover: its blocked takes are dropped (UNBLOCKED), then every
    # write is refused (READONLY). Neither is a fault of the worker's: it waits.
    server = RedisServer(tmp_path)
    server.start()
    client = server.client()
    handled: list[str] = []
    worker = new_worker(server, handled.append, heartbeat_ttl_s=3.0)
    try:
        with working(worker):
            client.lpush(QUEUE, "t1")
            wait_until(lambda: handled == ["t1"])
            client.replicaof("127.0.0.1", str(free_port()))

            def refusals() -> int:
                stats = client.info("errorstats")
                return sum(
                    int(stats.get(f"errorstat_{name}", {}).get("count", 0))
                    for name in ("READONLY", "UNBLOCKED")
                )

            wait_until(lambda: refusals() >= 2, timeout_s=20)
            assert not worker.wait(0)  # still running
            client.replicaof("NO", "ONE")
            client.lpush(QUEUE, "t2")
            wait_until(lambda: handled == ["t1", "t2"], timeout_s=20)
    finally:
        client.close()
        server.close()
    assert handled == ["t1", "t2"]
