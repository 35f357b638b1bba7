"""The worker library (resc.worker.worker) against a real Redis: the protocol, retries and the
failed list, the reaper, stopping, compatible mode."""

from __future__ import annotations

import contextlib
import itertools
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from resc.core import failures
from resc.core.errors import RedisUnavailable
from resc.worker import AttemptFailed, TaskFailed, Worker, WorkerError
from resc.worker import store as worker_store
from tests.conftest import RedisServer, wait_until

QUEUE = "trt/plantA/todo-queue"
SET = "trt/plantA/todo-set"
DONE = "global/events"


def failed_reasons(r: Any, failed_list: str) -> dict[bytes, list[tuple[str, int | None]]]:
    """The reason and attempts of each failed copy, per task (resc.core.failures)."""
    return {
        task: [(record.reason, record.attempts) for record in failures.decode(value)]
        for task, value in r.hgetall(f"{failed_list}/reasons").items()
    }


@pytest.fixture(autouse=True)
def quick_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Takes wait 0.1 s instead of 1 s, so that stopping a worker is quick."""
    monkeypatch.setattr(worker_store, "TAKE_BLOCK_S", 0.1)


def new_worker(server: RedisServer, handler: Callable[[str], object], **options: Any) -> Worker:
    options = {"queue": QUEUE, "heartbeat_ttl_s": 1.0, "retry_delay_s": 0.01, **options}
    return Worker(server.url, handler=handler, **options)


@contextlib.contextmanager
def working(*workers: Worker) -> Iterator[None]:
    for worker in workers:
        worker.start()
    try:
        yield
    finally:
        for worker in workers:
            worker.stop()
        for worker in workers:
            assert worker.wait(10)


# A worker in a child process, for kills and signals. Its handler records each task it
# starts and finishes in the lists `started` and `handled`; mode "block" never finishes.
CHILD = """
import sys, threading, time
import redis
from resc.worker import Worker
url, mode, worker_id, ttl_s = sys.argv[1:5]
r = redis.Redis.from_url(url)
worker = Worker(url, queue=sys.argv[5], worker_id=worker_id or None, heartbeat_ttl_s=float(ttl_s))

@worker.handler
def handle(task):
    r.lpush("started", task)
    if mode == "block":
        threading.Event().wait()
    elif mode == "slow":
        time.sleep(1)
    r.lpush("handled", task)

worker.run()
"""


def child_worker(server: RedisServer, mode: str, worker_id: str = "", ttl_s: float = 0.5):
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, server.url, mode, worker_id, str(ttl_s), QUEUE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_task_is_handled_then_notified_and_leaves_no_key_behind(r, redis_server):
    handled: list[str] = []
    worker = new_worker(redis_server, handled.append, set=SET)
    r.zadd(SET, {"a": 1, "b": 1, "c": 1})
    r.lpush(QUEUE, "a", "b", "c")
    with working(worker):
        wait_until(lambda: r.llen(DONE) == 3)
        assert r.smembers(f"{QUEUE}/workers") == {worker.worker_id.encode()}
        assert r.exists(f"{QUEUE}/heartbeat/{worker.worker_id}") == 1
    assert handled == ["a", "b", "c"]
    assert r.lrange(DONE, 0, -1) == [b"c", b"b", b"a"]
    assert sorted(r.keys("*")) == [DONE.encode()]


def test_decorated_handler_is_used(r, redis_server):
    worker = Worker(redis_server.url, queue=QUEUE, done_queue="done")
    seen: list[str] = []

    @worker.handler
    def handle(task: str) -> None:
        seen.append(task)

    r.lpush(QUEUE, "x")
    with working(worker):
        wait_until(lambda: r.llen("done") == 1)
    assert seen == ["x"]


def test_zrem_before_frees_the_set_while_the_task_runs_and_after_only_once_done(r, redis_server):
    scores: dict[str, float | None] = {}

    def record(task: str) -> None:
        scores[task] = r.zscore(SET, task)

    before = new_worker(redis_server, record, queue="q1", set=SET, zrem="before")
    after = new_worker(redis_server, record, queue="q2", set=SET, zrem="after")
    r.zadd(SET, {"t1": 7, "t2": 7})
    r.lpush("q1", "t1")
    r.lpush("q2", "t2")
    with working(before, after):
        wait_until(lambda: r.llen(DONE) == 2)
    assert scores == {"t1": None, "t2": 7.0}
    assert r.zcard(SET) == 0


def test_a_raising_handler_is_retried_with_doubling_delays_then_failed_with_its_reason(
    r, redis_server
):
    calls: list[float] = []

    def broken(task: str) -> None:
        calls.append(time.monotonic())
        raise ValueError(f"cannot compute {task}")

    worker = new_worker(redis_server, broken, set=SET, retries=2, retry_delay_s=0.1)
    r.zadd(SET, {"t": 1})
    r.lpush(QUEUE, "t")
    with working(worker):
        wait_until(lambda: r.llen(f"{QUEUE}/failed") == 1)
    assert len(calls) == 3
    gaps = [later - earlier for earlier, later in itertools.pairwise(calls)]
    # Lower bounds are exact; upper bounds leave room for a loaded machine.
    assert 0.1 <= gaps[0] < 0.19 and 0.2 <= gaps[1] < 0.39
    assert r.lrange(f"{QUEUE}/failed", 0, -1) == [b"t"]
    assert failed_reasons(r, f"{QUEUE}/failed") == {b"t": [("ValueError: cannot compute t", 3)]}
    assert r.llen(DONE) == 0
    assert r.zcard(SET) == 0  # a later event can make the task again


def test_a_task_failed_with_zrem_after_leaves_the_set_too(r, redis_server):
    scores: list[float | None] = []

    def reject(task: str) -> None:
        scores.append(r.zscore(SET, task))
        raise TaskFailed("not a known product")

    worker = new_worker(redis_server, reject, set=SET, zrem="after")
    r.zadd(SET, {"t": 1})
    r.lpush(QUEUE, "t")
    with working(worker):
        wait_until(lambda: r.llen(f"{QUEUE}/failed") == 1)
    assert scores == [1.0]  # still in the set while the handler ran
    assert r.zcard(SET) == 0  # a later event can make the task again


def test_attempt_failed_records_its_message_as_the_whole_reason(r, redis_server):
    def broken(task: str) -> None:
        raise AttemptFailed("why")

    worker = new_worker(redis_server, broken, retries=0)
    r.lpush(QUEUE, "t")
    with working(worker):
        wait_until(lambda: r.llen(f"{QUEUE}/failed") == 1)
    assert failed_reasons(r, f"{QUEUE}/failed") == {b"t": [("why", 1)]}


def test_a_handler_that_fails_once_then_succeeds_notifies_once(r, redis_server):
    attempts: list[str] = []

    def flaky(task: str) -> None:
        attempts.append(task)
        if len(attempts) == 1:
            raise ConnectionError("web service down")

    worker = new_worker(redis_server, flaky)
    r.lpush(QUEUE, "t")
    with working(worker):
        wait_until(lambda: r.llen(DONE) == 1)
    assert attempts == ["t", "t"]
    assert r.lrange(DONE, 0, -1) == [b"t"]
    assert r.llen(f"{QUEUE}/failed") == 0


def test_task_failed_goes_to_the_failed_list_at_once(r, redis_server):
    calls: list[str] = []

    def reject(task: str) -> None:
        calls.append(task)
        raise TaskFailed("not a known product")

    worker = new_worker(redis_server, reject, retries=5, failed_queue="bad")
    r.lpush(QUEUE, "t")
    with working(worker):
        wait_until(lambda: r.llen("bad") == 1)
    assert calls == ["t"]
    assert failed_reasons(r, "bad") == {b"t": [("not a known product", 1)]}


def test_a_task_that_is_not_utf8_goes_to_the_failed_list_byte_for_byte(r, redis_server):
    calls: list[str] = []
    worker = new_worker(redis_server, calls.append)
    r.lpush(QUEUE, b"\xff\xfe")
    with working(worker):
        wait_until(lambda: r.llen(f"{QUEUE}/failed") == 1)
    assert calls == []
    assert r.lrange(f"{QUEUE}/failed", 0, -1) == [b"\xff\xfe"]
    [(reason, attempts)] = failed_reasons(r, f"{QUEUE}/failed")[b"\xff\xfe"]
    assert reason.startswith("task is not UTF-8 text") and attempts == 0


def test_sigkill_mid_task_then_the_reaper_requeues_the_task_exactly_once(r, redis_server):
    victim = child_worker(redis_server, "block", worker_id="victim", ttl_s=0.5)
    r.lpush(QUEUE, "t")
    try:
        wait_until(lambda: r.lrange("started", 0, -1) == [b"t"])
        assert r.lrange(f"{QUEUE}/taken/victim", 0, -1) == [b"t"]
    finally:
        victim.kill()
        victim.communicate()
    handled: list[str] = []
    # Two live workers both reap; the task must still be redone once.
    first = new_worker(redis_server, handled.append, heartbeat_ttl_s=0.3)
    second = new_worker(redis_server, handled.append, heartbeat_ttl_s=0.3)
    with working(first, second):
        wait_until(lambda: r.llen(DONE) == 1)
        assert r.smembers(f"{QUEUE}/workers") == {
            first.worker_id.encode(),
            second.worker_id.encode(),
        }
    assert handled == ["t"]
    assert r.lrange(DONE, 0, -1) == [b"t"]
    assert r.llen(QUEUE) == 0
    assert r.keys(f"{QUEUE}/taken/*") == []


def test_two_workers_on_one_queue_never_do_a_task_twice(r, redis_server):
    handled: list[str] = []  # list.append is atomic under the GIL
    workers = [new_worker(redis_server, handled.append, concurrency=3) for _ in range(2)]
    tasks = [f"trt/plantA/{i}" for i in range(300)]
    r.lpush(QUEUE, *tasks)
    with working(*workers):
        wait_until(lambda: r.llen(DONE) == 300)
    assert sorted(handled) == sorted(tasks)
    assert sorted(r.lrange(DONE, 0, -1)) == sorted(t.encode() for t in tasks)


def test_notice_and_removal_from_the_taken_list_are_never_seen_apart(r, redis_server):
    """An observer snapshotting the queue, the taken list and the done queue together sees
    every task in exactly one of them, as a kill at any instant would leave it."""
    worker = new_worker(redis_server, lambda task: None, worker_id="w")
    tasks = [f"t{i}" for i in range(500)]
    r.lpush(QUEUE, *tasks)
    totals: set[int] = set()
    with working(worker):
        while True:
            with r.pipeline(transaction=True) as pipe:
                pipe.llen(QUEUE).llen(f"{QUEUE}/taken/w").llen(DONE)
                queued, taken, done = pipe.execute()
            totals.add(queued + taken + done)
            if done == 500:
                break
    assert totals == {500}


def test_kills_at_random_instants_neither_lose_nor_duplicate_a_notice(r, redis_server):
    tasks = [f"t{i}" for i in range(150)]
    r.lpush(QUEUE, *tasks)
    for handled_before_kill in (20, 50, 80, 110):
        child = child_worker(redis_server, "fast", ttl_s=0.3)
        wait_until(lambda n=handled_before_kill: r.llen("handled") >= n)
        child.kill()
        child.communicate()
    finisher = new_worker(redis_server, lambda task: None, heartbeat_ttl_s=0.3)
    with working(finisher):
        wait_until(lambda: r.llen(DONE) == 150 and not r.keys(f"{QUEUE}/taken/*"))
    assert sorted(r.lrange(DONE, 0, -1)) == sorted(t.encode() for t in tasks)
    assert r.llen(QUEUE) == 0


def test_a_worker_presumed_dead_does_not_notify_a_task_requeued_meanwhile(r, redis_server):
    release = threading.Event()
    slow = new_worker(redis_server, lambda task: release.wait(), heartbeat_ttl_s=30)
    reaper = new_worker(redis_server, lambda task: None)
    r.lpush(QUEUE, "t")
    with working(slow):
        wait_until(lambda: r.llen(f"{QUEUE}/taken/{slow.worker_id}") == 1)
        r.delete(f"{QUEUE}/heartbeat/{slow.worker_id}")  # as if it stopped beating
        reaper.store.connect()
        assert reaper.store.reap(slow.worker_id) == 1
        slow.stop()
        release.set()
    reaper.store.close()
    assert r.llen(DONE) == 0
    assert r.lrange(QUEUE, 0, -1) == [b"t"]


def test_sigterm_stops_the_worker_after_its_current_task(r, redis_server):
    child = child_worker(redis_server, "slow", worker_id="w", ttl_s=5)
    r.lpush(QUEUE, "first", "second")
    try:
        wait_until(lambda: r.lrange("started", 0, -1) == [b"first"])
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=10)
    finally:
        child.kill()
    assert child.returncode == 0, err
    assert r.lrange("handled", 0, -1) == [b"first"]
    assert r.lrange(DONE, 0, -1) == [b"first"]
    assert r.lrange(QUEUE, 0, -1) == [b"second"]
    assert r.keys(f"{QUEUE}/*") == []


@pytest.mark.parametrize("taken_queue", [None, "trt/plantA/taken"], ids=["own", "compatible"])
def test_stopping_during_a_retry_delay_gives_the_task_back_to_the_queue(
    r, redis_server, taken_queue: str | None
):
    failing = threading.Event()

    def broken(task: str) -> None:
        failing.set()
        raise RuntimeError("boom")

    worker = new_worker(redis_server, broken, retries=3, retry_delay_s=30, taken_queue=taken_queue)
    # On leaving, a worker puts back whatever its own taken list still holds: look at the
    # queue before that, so that only the give-back itself can have put the task there.
    # (In compatible mode nothing is put back on leaving.)
    real_reap = worker.store.reap
    before_leaving: list[list[bytes]] = []

    def reap_seeing_the_queue(worker_id: str, leaving: bool = False) -> int:
        if leaving:
            before_leaving.append(r.lrange(QUEUE, 0, -1))
        return real_reap(worker_id, leaving)

    worker.store.reap = reap_seeing_the_queue  # type: ignore[method-assign]
    r.lpush(QUEUE, "t")
    worker.start()
    assert failing.wait(5)
    started = time.monotonic()
    worker.stop()
    assert worker.wait(5)
    assert time.monotonic() - started < 2
    assert before_leaving == ([] if taken_queue else [[b"t"]])
    assert r.lrange(QUEUE, 0, -1) == [b"t"]
    assert r.llen(f"{QUEUE}/failed") == 0
    assert r.llen(worker.keys.taken) == 0


def test_compatible_mode_takes_into_the_shared_taken_list_with_no_heartbeat(r, redis_server):
    seen_taken: list[list[bytes]] = []
    worker = new_worker(
        redis_server,
        lambda task: seen_taken.append(r.lrange("trt/plantA/taken", 0, -1)),
        taken_queue="trt/plantA/taken",
        set=SET,
    )
    r.lpush("trt/plantA/taken", "a peer's task")
    r.lpush(QUEUE, "t")
    with working(worker):
        wait_until(lambda: r.llen(DONE) == 1)
        assert r.keys(f"{QUEUE}/*") == []
    assert seen_taken == [[b"t", b"a peer's task"]]
    assert r.lrange("trt/plantA/taken", 0, -1) == [b"a peer's task"]


def test_concurrent_threads_share_the_worker_taken_list(r, redis_server):
    all_in_hand = threading.Barrier(3, timeout=5)
    in_taken: list[int] = []

    def meet(task: str) -> None:
        all_in_hand.wait()
        in_taken.append(r.llen(f"{QUEUE}/taken/w"))

    worker = new_worker(redis_server, meet, concurrency=3, worker_id="w")
    r.lpush(QUEUE, "a", "b", "c")
    with working(worker):
        wait_until(lambda: r.llen(DONE) == 3)
    assert len(in_taken) == 3 and max(in_taken) == 3


def test_a_take_whose_reply_was_lost_is_put_back_and_done_once(r, redis_server):
    handled: list[str] = []
    worker = new_worker(redis_server, handled.append)
    real_take = worker.store.take
    lost: list[bytes] = []

    def take_losing_the_first_reply() -> bytes | None:
        task = real_take()
        if task is not None and not lost:
            lost.append(task)
            raise RedisUnavailable("taking: connection lost")
        return task

    worker.store.take = take_losing_the_first_reply  # type: ignore[method-assign]
    r.lpush(QUEUE, "t")
    with working(worker):
        wait_until(lambda: r.llen(DONE) == 1)
    assert lost == [b"t"]
    assert handled == ["t"]
    assert r.lrange(DONE, 0, -1) == [b"t"]


def test_a_notice_whose_reply_was_lost_is_not_sent_twice(r, redis_server):
    worker = new_worker(redis_server, lambda task: None)
    real_done = worker.store.done
    results: list[bool] = []

    def done_losing_the_first_reply(task: bytes, zrem: bool, notice: worker_store.Notice) -> bool:
        result = real_done(task, zrem, notice)
        results.append(result)
        if len(results) == 1:
            raise RedisUnavailable("notifying: connection lost")
        return result

    worker.store.done = done_losing_the_first_reply  # type: ignore[method-assign]
    r.lpush(QUEUE, "t")
    with working(worker):
        # Until the notice has been sent again after the lost reply, not just once.
        wait_until(lambda: len(results) >= 2)
    assert r.lrange(DONE, 0, -1) == [b"t"]
    assert results == [True, False]  # the retry found the task already done


def test_the_worker_waits_out_a_redis_restart(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    handled: list[str] = []
    worker = new_worker(server, handled.append)
    client = server.client()
    try:
        with working(worker):
            client.lpush(QUEUE, "before")
            wait_until(lambda: client.llen(DONE) == 1)
            server.kill()
            time.sleep(0.3)
            server.start()
            client.lpush(QUEUE, "after")
            wait_until(lambda: client.llen(DONE) == 1 and handled == ["before", "after"])
    finally:
        client.close()
        server.close()


def test_a_worker_id_in_use_is_refused(r, redis_server):
    first = new_worker(redis_server, lambda task: None, worker_id="w")
    second = new_worker(redis_server, lambda task: None, worker_id="w")
    with working(first):
        wait_until(lambda: r.exists(f"{QUEUE}/heartbeat/w"))
        second.start()
        with pytest.raises(WorkerError, match=r"worker id 'w' is in use on trt/plantA/todo-queue"):
            second.wait(10)


def test_a_done_queue_of_the_wrong_type_stops_the_worker_and_keeps_the_task(r, redis_server):
    r.set(DONE, "not a list")
    worker = new_worker(redis_server, lambda task: None)
    r.lpush(QUEUE, "t")
    worker.start()
    with pytest.raises(WorkerError, match="global/events holds a string, not a list"):
        worker.wait(10)
    assert r.lrange(QUEUE, 0, -1) == [b"t"]


def test_bad_options_are_refused_with_every_reason():
    with pytest.raises(ValueError) as raised:
        Worker("redis://127.0.0.1/", queue="q", concurrency=0, zrem="never", taken_queue="q")
    assert str(raised.value) == (
        "zrem must be 'before' or 'after', not 'never'; concurrency must be at least 1, "
        "not 0; taken_queue must differ from queue"
    )


def test_starting_without_a_handler_is_refused(redis_server):
    with pytest.raises(WorkerError, match="no handler"):
        Worker(redis_server.url, queue="q").start()


def test_commands_that_move_tasks_are_sent_without_client_retries(redis_server):
    worker = new_worker(redis_server, lambda task: None)
    retry = worker.store._redis.get_retry()
    assert retry is not None and retry.get_retries() == 0
