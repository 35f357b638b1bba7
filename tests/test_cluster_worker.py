"""Workers on a real Redis Cluster of three masters: the take / do / notify protocol on a
hash-tagged queue, with a done queue in its slot (one atomic notice) or in another
(pushed first, then the task removed); kill -9 of `resc work` mid-task; a master killed
under a running worker; a queue whose keys cannot share a slot refused."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.backoff import ConstantBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from resc.connection.clients import cluster_client
from resc.core.errors import RedisUnavailable
from resc.core.keys import worker_taken_list
from resc.core.slots import slot_of
from resc.worker.aio import AsyncWorker
from resc.worker.worker import Worker, WorkerError
from tests.cluster import ClusterTopology
from tests.conftest import resc_process, wait_until

pytestmark = pytest.mark.server

QUEUE, SET, FAILED = "{plant}/todo", "{plant}/todo-set", "{plant}/todo/failed"
# In the queue's slot, and in a slot of another master (checked by the tests).
CO_LOCATED_DONE, CROSS_SLOT_DONE = "{plant}/events", "global/events"


@pytest.fixture
def client(cluster: ClusterTopology) -> Iterator[RedisCluster]:
    made = cluster_client(cluster.url(), socket_timeout=5)
    yield made
    made.close()


def tasks(count: int) -> list[str]:
    return [f"task/{i}" for i in range(count)]


def queue_tasks(client: RedisCluster, count: int, with_set: bool = False) -> None:
    names = tasks(count)
    if with_set:
        client.zadd(SET, dict.fromkeys(names, 1))
    for start in range(0, count, 500):
        client.lpush(QUEUE, *names[start : start + 500])


def notices(client: RedisCluster, done_queue: str) -> Counter[bytes]:
    return Counter(client.lrange(done_queue, 0, -1))


def assert_other_master(topology: ClusterTopology, done_queue: str) -> None:
    """The cross-slot done queue is on another master, not only in another slot."""
    assert slot_of(done_queue) != slot_of(QUEUE)
    assert topology.master_of(done_queue).port != topology.master_of(QUEUE).port


@pytest.mark.parametrize("done_queue", [CO_LOCATED_DONE, CROSS_SLOT_DONE])
def test_a_worker_does_each_task_and_notifies_it_once(
    cluster: ClusterTopology, client: RedisCluster, done_queue: str
):
    if done_queue == CROSS_SLOT_DONE:
        assert_other_master(cluster, done_queue)
    queue_tasks(client, 300, with_set=True)
    handled: Counter[str] = Counter()
    lock = threading.Lock()

    def handle(task: str) -> None:
        with lock:
            handled[task] += 1

    worker = Worker(
        cluster.url(),
        queue=QUEUE,
        set=SET,
        done_queue=done_queue,
        handler=handle,
        concurrency=4,
        worker_id="w1",
    )
    worker.start()
    try:
        wait_until(lambda: sum(notices(client, done_queue).values()) >= 300, timeout_s=30)
    finally:
        worker.stop()
        assert worker.wait(15)
    assert notices(client, done_queue) == Counter(t.encode() for t in tasks(300))
    assert handled == Counter(tasks(300))
    assert client.llen(QUEUE) == 0
    assert client.exists(worker_taken_list(QUEUE, "w1")) == 0
    assert client.zcard(SET) == 0
    # Left cleanly: unregistered, its heartbeat gone.
    assert client.smembers(f"{QUEUE}/workers") == set()
    assert client.exists(f"{QUEUE}/heartbeat/w1") == 0


def test_a_failing_task_goes_to_the_failed_list_in_the_queues_slot(
    cluster: ClusterTopology, client: RedisCluster
):
    client.lpush(QUEUE, "task/bad")

    def handle(task: str) -> None:
        raise ValueError("no such product")

    worker = Worker(
        cluster.url(), queue=QUEUE, done_queue=CROSS_SLOT_DONE, handler=handle, retries=0
    )
    worker.start()
    try:
        wait_until(lambda: client.llen(FAILED) == 1, timeout_s=20)
    finally:
        worker.stop()
        assert worker.wait(15)
    assert client.lrange(FAILED, 0, -1) == [b"task/bad"]
    assert b"no such product" in client.hget(f"{FAILED}/reasons", "task/bad")
    assert client.llen(CROSS_SLOT_DONE) == 0


@pytest.mark.parametrize("done_queue", [CO_LOCATED_DONE, CROSS_SLOT_DONE])
def test_an_async_worker_does_each_task_and_notifies_it_once(
    cluster: ClusterTopology, client: RedisCluster, done_queue: str
):
    queue_tasks(client, 200, with_set=True)
    handled: Counter[str] = Counter()

    async def handle(task: str) -> None:
        handled[task] += 1

    async def main() -> None:
        worker = AsyncWorker(
            cluster.url(),
            queue=QUEUE,
            set=SET,
            done_queue=done_queue,
            handler=handle,
            concurrency=4,
        )
        running = asyncio.create_task(worker.run(signals=False))
        deadline = time.monotonic() + 30
        while sum(notices(client, done_queue).values()) < 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        worker.stop()
        await asyncio.wait_for(running, 15)

    asyncio.run(main())
    assert notices(client, done_queue) == Counter(t.encode() for t in tasks(200))
    assert handled == Counter(tasks(200))
    assert client.zcard(SET) == 0


@pytest.mark.parametrize(
    "options, apart",
    [
        ({"queue": "plant/todo"}, "plant/todo/taken/w1"),
        ({"queue": QUEUE, "set": "plant/todo-set"}, "plant/todo-set"),
        ({"queue": QUEUE, "failed_queue": "plant/failed"}, "plant/failed"),
    ],
)
def test_a_worker_whose_keys_do_not_share_the_queues_slot_is_refused(
    cluster: ClusterTopology, options: dict[str, str], apart: str
):
    worker = Worker(cluster.url(), handler=lambda task: None, worker_id="w1", **options)  # type: ignore[arg-type]
    worker.start()
    with pytest.raises(WorkerError) as refused:
        worker.wait(15)
    message = str(refused.value)
    assert "on a Redis Cluster a worker's keys must share its queue's slot" in message
    assert apart in message
    assert "{plant}" in message


def test_a_worker_given_a_cluster_nodes_plain_url_works_on_the_cluster(
    cluster: ClusterTopology, client: RedisCluster
):
    queue_tasks(client, 50)
    worker = Worker(
        cluster.masters[0].url, queue=QUEUE, done_queue=CROSS_SLOT_DONE, handler=lambda t: None
    )
    worker.start()
    try:
        wait_until(lambda: client.llen(CROSS_SLOT_DONE) >= 50, timeout_s=20)
    finally:
        worker.stop()
        assert worker.wait(15)
    assert notices(client, CROSS_SLOT_DONE) == Counter(t.encode() for t in tasks(50))


def work(topology: ClusterTopology, done_queue: str, worker_id: str, out: Path):
    """`resc work` on the queue, whose command logs each task it starts in `out` and
    takes 50 ms; a heartbeat TTL of 1 s, so that a killed worker is reaped soon."""
    script = f'echo "$RESC_TASK" >> {out}; sleep 0.05'
    return resc_process(
        "work",
        "--redis",
        topology.url(),
        "--queue",
        QUEUE,
        "--set",
        SET,
        "--done",
        done_queue,
        "--worker-id",
        worker_id,
        "--heartbeat-ttl",
        "1",
        "--concurrency",
        "2",
        "--",
        "sh",
        "-c",
        script,
    )


def stopped(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 0, err
    return err


@pytest.mark.parametrize("restart_as", ["first", "second"])
@pytest.mark.parametrize("done_queue", [CO_LOCATED_DONE, CROSS_SLOT_DONE])
def test_resc_work_killed_mid_task_then_restarted_does_every_task(
    cluster: ClusterTopology, client: RedisCluster, tmp_path: Path, done_queue: str,
    restart_as: str,
):  # fmt: skip
    """kill -9 of `resc work` with tasks in hand, then a worker started again: under the
    same id once its heartbeat has expired (it puts back what it had taken, join.lua), or
    under another id (it reaps the killed one, reap.lua). Every task is done; with the
    done queue in the queue's slot each is notified exactly once (one atomic step); in
    another slot at least once (README: a crash between the push and the removal
    notifies again)."""
    count = 150
    queue_tasks(client, count, with_set=True)
    out = tmp_path / "started"
    first = work(cluster, done_queue, "first", out)
    taken = worker_taken_list(QUEUE, "first")
    try:
        wait_until(lambda: client.llen(done_queue) >= 20, timeout_s=20)
        wait_until(lambda: client.llen(taken) >= 1, timeout_s=20)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        first.kill()
    in_hand_at_kill = client.llen(taken)
    assert in_hand_at_kill >= 1
    if restart_as == "first":
        wait_until(lambda: client.exists(f"{QUEUE}/heartbeat/first") == 0, timeout_s=10)
    again = work(cluster, done_queue, restart_as, out)
    try:
        wait_until(lambda: len(notices(client, done_queue)) == count, timeout_s=60)
        log = stopped(again)
    finally:
        again.kill()
    if restart_as == "first":
        assert "tasks left taken by a previous run put back" in log, log
    else:
        assert "heartbeat of a worker expired: its tasks are back in the queue" in log, log
    done = notices(client, done_queue)
    assert set(done) == {t.encode() for t in tasks(count)}
    if done_queue == CO_LOCATED_DONE:
        assert max(done.values()) == 1, [t for t, n in done.items() if n > 1]
    assert client.llen(QUEUE) == 0
    assert client.exists(taken, worker_taken_list(QUEUE, restart_as)) == 0
    assert client.zcard(SET) == 0
    assert client.smembers(f"{QUEUE}/workers") == set()
    started = Counter(out.read_text().split())
    assert set(started) == set(tasks(count))


def test_a_master_killed_under_a_running_worker_loses_no_task(
    cluster_with_replicas: ClusterTopology,
):
    """kill -9 of the master of the queue's slot while a worker takes from it, its
    replica promoted: the worker waits the failover out (a lost connection, UNBLOCKED,
    MOVED) and then does every task. The tasks reached the replica before the kill
    (WAIT); a notice pushed to the old master and not replicated is the only thing a
    failover may lose (README)."""
    topology = cluster_with_replicas
    # The test's own reads wait the failover out by retrying (they are safe to re-send).
    client = cluster_client(topology.url(), socket_timeout=5, retry=Retry(ConstantBackoff(0.2), 50))
    count = 400
    try:
        queue_tasks(client, count)
        old = topology.master_of(QUEUE)
        with old.plain() as plain:
            plain.execute_command("WAIT", 1, 5000)

        def handle(task: str) -> None:
            time.sleep(0.005)

        worker = Worker(
            topology.url(),
            queue=QUEUE,
            done_queue=CROSS_SLOT_DONE,
            handler=handle,
            concurrency=2,
            heartbeat_ttl_s=30,
        )
        worker.start()
        try:
            wait_until(lambda: client.llen(CROSS_SLOT_DONE) >= 50, timeout_s=30)
            topology.kill_master(old)
            wait_until(lambda: len(notices(client, CROSS_SLOT_DONE)) == count, timeout_s=60)
        finally:
            worker.stop()
            assert worker.wait(20)
        assert set(notices(client, CROSS_SLOT_DONE)) == {t.encode() for t in tasks(count)}
        assert client.llen(QUEUE) == 0
    finally:
        client.close()


def test_a_cross_slot_notice_whose_removal_was_cut_off_is_not_pushed_again(
    cluster: ClusterTopology, client: RedisCluster
):
    """The push went through, then the connection was lost before the removal: the
    retry only removes (store.Notice), so the task is notified once."""
    worker = Worker(cluster.url(), queue=QUEUE, done_queue=CROSS_SLOT_DONE, handler=lambda t: None)
    real_run = worker.store._run
    lost: list[str] = []

    def run_cutting_off_the_first_removal(call: Any) -> int:
        if call.script == "done" and not lost:
            lost.append(call.action)
            raise RedisUnavailable(f"{call.action}: connection lost")
        return real_run(call)

    worker.store._run = run_cutting_off_the_first_removal  # type: ignore[method-assign]
    client.lpush(QUEUE, "t")
    worker.start()
    try:
        wait_until(lambda: lost and client.llen(worker.keys.taken) == 0, timeout_s=20)
    finally:
        worker.stop()
        assert worker.wait(15)
    assert lost == ["finishing a task"]
    assert client.lrange(CROSS_SLOT_DONE, 0, -1) == [b"t"]
