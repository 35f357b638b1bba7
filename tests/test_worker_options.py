"""The worker library's options: a per-task timeout, the context a handler may ask for,
and a given redis-py client or connection pool."""

from __future__ import annotations

import threading
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from resc.worker import TaskContext, Worker, WorkerError
from tests.conftest import wait_until
from tests.test_worker import DONE, QUEUE, failed_reasons, new_worker, working
from tests.test_worker import quick_takes as quick_takes  # the autouse fixture

# --- timeout_s -----------------------------------------------------------------------


def test_a_handler_past_its_timeout_is_retried_then_failed_with_the_reason(r, redis_server):
    never = threading.Event()
    calls: list[str] = []

    def hang(task: str) -> None:
        calls.append(task)
        never.wait()

    worker = new_worker(redis_server, hang, timeout_s=0.2, retries=1, concurrency=2)
    r.lpush(QUEUE, "t")
    try:
        with working(worker):
            wait_until(lambda: r.llen(f"{QUEUE}/failed") == 1)
    finally:
        never.set()
    assert calls == ["t", "t"]
    assert failed_reasons(r, f"{QUEUE}/failed") == {
        b"t": [("the handler ran past its timeout of 0.2 s (its thread was left running)", 2)]
    }
    assert r.llen(DONE) == 0


def test_a_late_first_attempt_then_a_quick_one_is_done_once(r, redis_server):
    release = threading.Event()
    attempts: list[int] = []

    def slow_once(task: str, context: TaskContext) -> None:
        attempts.append(context.attempt)
        if context.attempt == 1:
            release.wait()

    worker = new_worker(redis_server, slow_once, timeout_s=0.2)
    r.lpush(QUEUE, "t")
    try:
        with working(worker):
            wait_until(lambda: r.llen(DONE) == 1)
    finally:
        release.set()  # the abandoned first attempt ends: its outcome counts for nothing
    assert attempts == [1, 2]
    assert r.lrange(DONE, 0, -1) == [b"t"]


def test_an_exception_within_the_timeout_is_an_ordinary_failure(r, redis_server):
    def broken(task: str) -> None:
        raise ValueError("bad input")

    worker = new_worker(redis_server, broken, timeout_s=5, retries=0)
    r.lpush(QUEUE, "t")
    with working(worker):
        wait_until(lambda: r.llen(f"{QUEUE}/failed") == 1)
    assert failed_reasons(r, f"{QUEUE}/failed") == {b"t": [("ValueError: bad input", 1)]}


def test_more_stuck_handlers_than_threads_stop_the_worker(r, redis_server):
    never = threading.Event()
    worker = new_worker(redis_server, lambda task: never.wait(), timeout_s=0.1, retries=0)
    r.lpush(QUEUE, "a", "b", "c")
    worker.start()
    try:
        with pytest.raises(
            WorkerError,
            match=r"2 handler threads ran past their timeout and are still running \(at most 1\)",
        ):
            worker.wait(10)
    finally:
        never.set()
    assert r.lrange(f"{QUEUE}/failed", 0, -1) == [b"b", b"a"]
    assert r.lrange(QUEUE, 0, -1) == [b"c"]  # not taken by a worker on its way out
    assert r.keys(f"{QUEUE}/taken/*") == []


# --- context -------------------------------------------------------------------------


def test_a_handler_with_a_second_parameter_gets_the_context(r, redis_server):
    seen: list[TaskContext] = []

    def handle(task: str, context: TaskContext) -> None:
        seen.append(context)
        if context.attempt < 3:
            raise RuntimeError("again")

    worker = new_worker(redis_server, handle, worker_id="w", retries=3)
    r.lpush(QUEUE, "t")
    before = time.time()
    with working(worker):
        wait_until(lambda: r.llen(DONE) == 1)
    assert [(c.task, c.attempt, c.worker_id, c.queue) for c in seen] == [
        ("t", 1, "w", QUEUE),
        ("t", 2, "w", QUEUE),
        ("t", 3, "w", QUEUE),
    ]
    assert len({c.taken_at_s for c in seen}) == 1  # one take, three attempts
    assert before <= seen[0].taken_at_s <= time.time()


def test_a_handler_taking_any_number_of_arguments_gets_the_task_alone(r, redis_server):
    seen: list[tuple[object, ...]] = []
    worker = new_worker(redis_server, lambda *args: seen.append(args))
    r.lpush(QUEUE, "t")
    with working(worker):
        wait_until(lambda: r.llen(DONE) == 1)
    assert seen == [("t",)]


def test_a_context_parameter_with_a_default_gets_the_context(r, redis_server):
    seen: list[object] = []

    def handle(task: str, context: TaskContext | None = None) -> None:
        seen.append(context.attempt if context else None)

    worker = new_worker(redis_server, handle)
    r.lpush(QUEUE, "t")
    with working(worker):
        wait_until(lambda: r.llen(DONE) == 1)
    assert seen == [1]


def test_a_handler_of_the_wrong_shape_is_refused_when_registered(redis_server):
    worker = Worker(redis_server.url, queue=QUEUE)
    with pytest.raises(TypeError, match=r"must take the task, or the task and a context"):

        @worker.handler
        def three(task: str, context: TaskContext, extra: int) -> None: ...

    with pytest.raises(TypeError, match=r"must take the task"):
        Worker(redis_server.url, queue=QUEUE, handler=lambda: None)


# --- client= and pool= ---------------------------------------------------------------


def suitable_client(port: int, **options: object) -> redis.Redis:
    settings: dict[str, object] = {"socket_timeout": 5, "retry": Retry(NoBackoff(), 0)}
    settings.update(options)
    return redis.Redis(port=port, **settings)  # type: ignore[arg-type]


def test_a_given_client_is_used_and_left_open(r, redis_server):
    client = suitable_client(redis_server.port, client_name="mine")
    handled: list[str] = []
    worker = Worker(queue=QUEUE, client=client, handler=handled.append, heartbeat_ttl_s=1.0)
    r.lpush(QUEUE, "t")
    with working(worker):
        wait_until(lambda: r.llen(DONE) == 1)
        names = {c["name"] for c in r.client_list()}
        assert "mine" in names and f"resc-worker-{worker.worker_id}" not in names
    assert handled == ["t"]
    assert client.ping() is True  # still the caller's to use and close
    client.close()


def test_a_given_pool_is_used(r, redis_server):
    pool = redis.ConnectionPool(
        port=redis_server.port, socket_timeout=5, retry=Retry(NoBackoff(), 0)
    )
    worker = Worker(queue=QUEUE, pool=pool, handler=lambda task: None, heartbeat_ttl_s=1.0)
    r.lpush(QUEUE, "t")
    with working(worker):
        wait_until(lambda: r.llen(DONE) == 1)
    pool.disconnect()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retry": Retry(NoBackoff(), 3)}, r"it retries commands \(3 times\)"),
        ({"socket_timeout": None}, r"its socket_timeout \(None\) must be more than 1 s"),
        ({"socket_timeout": 0.5}, r"its socket_timeout \(0.5\) must be more than 1 s"),
        ({"decode_responses": True}, r"it decodes responses"),
    ],
    ids=["retries", "no-timeout", "short-timeout", "decoding"],
)
def test_a_client_that_does_not_suit_a_worker_is_refused(
    redis_server, monkeypatch: pytest.MonkeyPatch, options: dict[str, object], message: str
):
    monkeypatch.setattr("resc.worker.store.TAKE_BLOCK_S", 1.0)
    client = suitable_client(redis_server.port, **options)
    prefix = "the given Redis client does not suit a worker: "
    with pytest.raises(ValueError, match=prefix + message):
        Worker(queue=QUEUE, client=client, handler=lambda task: None)
    client.close()


def test_one_connection_option_exactly(redis_server):
    client = suitable_client(redis_server.port)
    for options in ({}, {"redis_url": redis_server.url, "client": client}):
        with pytest.raises(ValueError, match="give one of redis_url, client= and pool="):
            Worker(queue=QUEUE, **options)  # type: ignore[arg-type]
    client.close()
