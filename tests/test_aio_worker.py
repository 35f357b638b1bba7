"""AsyncWorker against a real Redis: the same protocol and guarantees as Worker (notices,
failures, reaping, give-back on stop, a Redis restart, concurrency), with cancellation."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from resc.core.errors import RedisUnavailable
from resc.worker import AsyncWorker, TaskContext, TaskFailed, WorkerError
from resc.worker.aio_tasks import AsyncTaskLoop
from tests.conftest import RedisServer
from tests.test_worker import DONE, QUEUE, SET, failed_reasons
from tests.test_worker import quick_takes as quick_takes  # the autouse fixture


def new_worker(server: RedisServer, handler: Any, **options: Any) -> AsyncWorker:
    options = {"queue": QUEUE, "heartbeat_ttl_s": 1.0, "retry_delay_s": 0.01, **options}
    return AsyncWorker(server.url, handler=handler, **options)


async def until(predicate: Callable[[], Any], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.01)


def work_until(worker: AsyncWorker, predicate: Callable[[], Any]) -> None:
    """Run the worker until `predicate`, then stop it and wait until it has stopped."""

    async def main() -> None:
        running = asyncio.create_task(worker.run(signals=False))
        try:
            await until(lambda: predicate() or running.done())
        finally:
            worker.stop()
            await asyncio.wait_for(running, 10)

    asyncio.run(main())


def test_tasks_are_handled_notified_and_leave_no_key_behind(r, redis_server):
    handled: list[str] = []

    async def handle(task: str) -> None:
        await asyncio.sleep(0)
        handled.append(task)

    worker = new_worker(redis_server, handle, set=SET)
    r.zadd(SET, {"a": 1, "b": 1, "c": 1})
    r.lpush(QUEUE, "a", "b", "c")
    work_until(worker, lambda: r.llen(DONE) == 3)
    assert handled == ["a", "b", "c"]
    assert r.lrange(DONE, 0, -1) == [b"c", b"b", b"a"]
    assert sorted(r.keys("*")) == [DONE.encode()]


def test_handlers_run_concurrently_in_one_taken_list(r, redis_server):
    in_hand: list[int] = []
    all_in = asyncio.Event()
    running = 0

    async def meet(task: str) -> None:
        nonlocal running
        running += 1
        in_hand.append(r.llen(f"{QUEUE}/taken/w"))
        if running == 3:
            all_in.set()
        await asyncio.wait_for(all_in.wait(), 5)

    worker = new_worker(redis_server, meet, concurrency=3, worker_id="w")
    r.lpush(QUEUE, "a", "b", "c")
    work_until(worker, lambda: r.llen(DONE) == 3)
    assert max(in_hand) == 3
    assert sorted(r.lrange(DONE, 0, -1)) == [b"a", b"b", b"c"]


def test_failures_are_retried_then_recorded_and_any_exception_counts(r, redis_server):
    seen: list[tuple[str, int]] = []

    async def handle(task: str, context: TaskContext) -> None:
        seen.append((task, context.attempt))
        if task == "exit":
            raise SystemExit(2)
        if task == "reject":
            raise TaskFailed("not mine")

    worker = new_worker(redis_server, handle, retries=1)
    r.lpush(QUEUE, "exit", "reject", "fine")
    work_until(worker, lambda: r.llen(DONE) == 1)
    assert failed_reasons(r, f"{QUEUE}/failed") == {
        b"exit": [("SystemExit: 2", 2)],
        b"reject": [("not mine", 1)],
    }
    assert seen == [("exit", 1), ("exit", 2), ("reject", 1), ("fine", 1)]


def test_a_handler_past_its_timeout_is_cancelled_and_failed(r, redis_server):
    cancelled: list[str] = []

    async def hang(task: str) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(task)
            raise

    worker = new_worker(redis_server, hang, timeout_s=0.2, retries=0)
    r.lpush(QUEUE, "t")
    work_until(worker, lambda: r.llen(f"{QUEUE}/failed") == 1)
    assert cancelled == ["t"]
    assert failed_reasons(r, f"{QUEUE}/failed") == {
        b"t": [("the handler ran past its timeout of 0.2 s and was cancelled", 1)]
    }


def test_stopping_during_a_retry_delay_gives_the_task_back(r, redis_server):
    async def broken(task: str) -> None:
        raise RuntimeError("boom")

    worker = new_worker(redis_server, broken, retry_delay_s=30, set=SET)
    r.zadd(SET, {"t": 1})
    r.lpush(QUEUE, "t")
    started = time.monotonic()
    work_until(worker, lambda: r.zscore(SET, "t") is None)  # taken: out of the set
    assert time.monotonic() - started < 5
    assert r.lrange(QUEUE, 0, -1) == [b"t"]
    assert r.zscore(SET, "t") is not None  # back in the set with it
    assert r.keys(f"{QUEUE}/*") == []


def test_cancelling_run_cancels_the_handler_and_gives_its_task_back(r, redis_server):
    started = asyncio.Event()
    cancelled: list[str] = []

    async def hang(task: str) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(task)
            raise

    worker = new_worker(redis_server, hang, worker_id="w")
    r.lpush(QUEUE, "t")

    async def main() -> None:
        running = asyncio.create_task(worker.run(signals=False))
        await asyncio.wait_for(started.wait(), 10)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running

    asyncio.run(main())
    assert cancelled == ["t"]
    assert r.lrange(QUEUE, 0, -1) == [b"t"]
    assert r.keys(f"{QUEUE}/*") == []


def test_a_second_signal_cancels_the_handlers_and_gives_their_tasks_back(
    r, redis_server, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="resc.worker")

    async def hang(task: str) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # a moment later: the same stop
        await asyncio.sleep(0.6)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(60)

    worker = new_worker(redis_server, hang, worker_id="w")
    r.lpush(QUEUE, "t")
    started = time.monotonic()
    asyncio.run(asyncio.wait_for(worker.run(), 10))
    assert time.monotonic() - started < 5
    messages = [rec.getMessage() for rec in caplog.records]
    assert sum("stopping after the tasks in hand" in m for m in messages) == 1
    assert sum("second signal: cancelling the tasks in hand" in m for m in messages) == 1
    assert r.lrange(QUEUE, 0, -1) == [b"t"]
    assert r.keys(f"{QUEUE}/*") == []


def test_a_dead_workers_tasks_are_reaped_registered_or_not(r, redis_server):
    handled: list[str] = []

    async def handle(task: str) -> None:
        handled.append(task)

    r.lpush(f"{QUEUE}/taken/registered", "a")
    r.sadd(f"{QUEUE}/workers", "registered")
    r.lpush(f"{QUEUE}/taken/ghost", "b")
    worker = new_worker(redis_server, handle)
    work_until(worker, lambda: r.llen(DONE) == 2)
    assert sorted(handled) == ["a", "b"]
    assert r.keys(f"{QUEUE}/taken/*") == []
    assert r.smembers(f"{QUEUE}/workers") == set()


def test_the_worker_waits_out_a_redis_restart(tmp_path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING, logger="resc.worker")
    server = RedisServer(tmp_path)
    server.start()
    client = server.client()
    handled: list[str] = []

    async def handle(task: str) -> None:
        handled.append(task)

    worker = new_worker(server, handle, heartbeat_ttl_s=3.0, concurrency=2, worker_id="w")

    async def main() -> None:
        running = asyncio.create_task(worker.run(signals=False))
        try:
            client.lpush(QUEUE, "before")
            await until(lambda: client.llen(DONE) == 1)
            server.kill()
            server.start()
            client.lpush(QUEUE, "after")
            await until(lambda: client.llen(DONE) == 1 and handled == ["before", "after"])
            await until(lambda: client.exists(f"{QUEUE}/heartbeat/w"))
        finally:
            worker.stop()
            await asyncio.wait_for(running, 10)

    try:
        asyncio.run(main())
    finally:
        client.close()
        server.close()
    messages = [rec.getMessage() for rec in caplog.records]
    assert sum("Redis lost this worker's heartbeat" in m for m in messages) == 1


def test_a_done_queue_of_the_wrong_type_stops_the_worker_and_keeps_the_task(r, redis_server):
    r.set(DONE, "not a list")

    async def handle(task: str) -> None:
        pass

    worker = new_worker(redis_server, handle)
    r.lpush(QUEUE, "t")
    with pytest.raises(WorkerError, match="global/events holds a string, not a list"):
        asyncio.run(asyncio.wait_for(worker.run(signals=False), 10))
    assert r.lrange(QUEUE, 0, -1) == [b"t"]


def test_a_handler_that_is_not_async_is_refused(redis_server):
    with pytest.raises(TypeError, match="must be an async function"):
        AsyncWorker(redis_server.url, queue=QUEUE, handler=lambda task: None)


def test_a_taking_task_that_ends_stops_the_worker_and_gives_its_task_back(
    r, redis_server, monkeypatch: pytest.MonkeyPatch
):
    async def take_then_end(self: AsyncTaskLoop) -> None:
        while await self._take() is None:
            pass

    async def handle(task: str) -> None:
        pass

    monkeypatch.setattr(AsyncTaskLoop, "run", take_then_end)
    worker = new_worker(redis_server, handle, heartbeat_ttl_s=30, worker_id="w")
    r.lpush(QUEUE, "t")
    with pytest.raises(WorkerError, match=r"a taking task ended: worker w #0"):
        asyncio.run(asyncio.wait_for(worker.run(signals=False), 10))
    assert r.lrange(QUEUE, 0, -1) == [b"t"]
    assert r.keys(f"{QUEUE}/*") == []


def test_a_take_whose_reply_was_lost_is_put_back_and_done_once(r, redis_server):
    handled: list[str] = []

    async def handle(task: str) -> None:
        handled.append(task)

    worker = new_worker(redis_server, handle)
    real_take = worker.store.take
    lost: list[bytes] = []

    async def take_losing_the_first_reply() -> bytes | None:
        task = await real_take()
        if task is not None and not lost:
            lost.append(task)
            raise RedisUnavailable("taking: connection lost")
        return task

    worker.store.take = take_losing_the_first_reply  # type: ignore[method-assign]
    r.lpush(QUEUE, "t")
    work_until(worker, lambda: r.llen(DONE) == 1)
    assert lost == [b"t"]
    assert handled == ["t"]
    assert r.lrange(DONE, 0, -1) == [b"t"]
    assert r.keys(f"{QUEUE}/*") == []


def test_a_cut_off_worker_takes_nothing_until_it_is_registered_again(r, redis_server):
    handled: list[str] = []
    heartbeat = f"{QUEUE}/heartbeat/w"

    async def handle(task: str) -> None:
        handled.append(task)

    worker = new_worker(redis_server, handle, heartbeat_ttl_s=0.6, worker_id="w")
    cut_off = False
    real_beat, real_take = worker.store.beat, worker.store.take
    unregistered_takes: list[bool] = []

    async def beat(*args: Any) -> tuple[bool, bool]:
        if cut_off:
            raise RedisUnavailable("refreshing the heartbeat: connection refused")
        return await real_beat(*args)

    async def take() -> bytes | None:
        if not r.exists(heartbeat) or not r.sismember(f"{QUEUE}/workers", "w"):
            unregistered_takes.append(True)
        return await real_take()

    worker.store.beat = beat  # type: ignore[method-assign]
    worker.store.take = take  # type: ignore[method-assign]

    async def main() -> None:
        nonlocal cut_off
        running = asyncio.create_task(worker.run(signals=False))
        try:
            await until(lambda: r.exists(heartbeat))
            cut_off = True
            await until(lambda: not r.exists(heartbeat))
            r.srem(f"{QUEUE}/workers", "w")  # what a reaper does then
            r.lpush(QUEUE, "t")
            await asyncio.sleep(0.5)
            assert r.lrange(QUEUE, 0, -1) == [b"t"]
            cut_off = False
            await until(lambda: r.llen(DONE) == 1)
        finally:
            worker.stop()
            await asyncio.wait_for(running, 10)

    asyncio.run(main())
    assert unregistered_takes == []
    assert handled == ["t"]


def test_an_async_worker_never_reaps_itself(r, redis_server):
    release = asyncio.Event()

    async def hold(task: str) -> None:
        await release.wait()

    worker = new_worker(redis_server, hold, heartbeat_ttl_s=30)
    taken = f"{QUEUE}/taken/{worker.worker_id}"
    r.lpush(QUEUE, "t")

    async def main() -> None:
        running = asyncio.create_task(worker.run(signals=False))
        try:
            await until(lambda: r.llen(taken) == 1)
            r.delete(f"{QUEUE}/heartbeat/{worker.worker_id}")
            await worker._reap()
            assert r.lrange(taken, 0, -1) == [b"t"]
        finally:
            release.set()
            await until(lambda: r.llen(DONE) == 1)
            worker.stop()
            await asyncio.wait_for(running, 10)

    asyncio.run(main())
    assert r.lrange(DONE, 0, -1) == [b"t"]
