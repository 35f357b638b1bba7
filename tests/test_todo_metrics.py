"""/metrics of a running resc shows what users wait on: the todo queues of its config
(tasks, set members, oldest task, workers, tasks held, failed), and the dedup set
members set_ttl removed; labels are the config's patterns."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from resc.dev.embedded import free_port
from resc.worker import TaskFailed, Worker
from resc.worker import store as worker_store
from tests.conftest import RedisServer, make_config, resc_process, wait_until, write_config
from tests.test_metrics import _answers, get, metric

PLANT = "trt/${plant}/todo"


@pytest.fixture
def daemon(redis_server: RedisServer, tmp_path: Path) -> Iterator[str]:
    plant = {"task": "job/${id}", "queue": PLANT, "set": "trt/${plant}/set",
             "queue_glob": "trt/*/todo", "set_ttl": 1}  # fmt: skip
    todo = {"task": "job/${id}", "queue": "todo", "set": "todo-set"}
    rules = [
        {"on": r"^ok/(?P<id>\d+)$", "make": todo},
        {"on": r"^plant/(?P<plant>\w+)/(?P<id>\d+)$", "make": plant},
    ]
    config = make_config(redis_server.url, [{"input_queue": "in", "rules": rules}])
    port = free_port()
    process = resc_process(
        "run", "--http", f"127.0.0.1:{port}", str(write_config(tmp_path, config))
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(base))
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0


def test_todo_families_follow_the_queues_sets_workers_and_failed_lists(
    r, redis_server, daemon, monkeypatch
):
    monkeypatch.setattr(worker_store, "TAKE_BLOCK_S", 0.1)

    def fail(task: str) -> None:
        raise TaskFailed("no")

    worker = Worker(redis_server.url, queue="trt/A/todo", set="trt/A/set", done_queue=None,
                    handler=fail, worker_id="w1", heartbeat_ttl_s=3)  # fmt: skip
    # A dead worker on todo, holding a task.
    r.sadd("todo/workers", "ghost")
    r.lpush("todo/taken/ghost", "job/0")
    start = time.time()
    r.lpush("in", "ok/1", "ok/2", "plant/B/3", "plant/C/4", "plant/C/5")
    worker.start()
    try:
        r.lpush("in", "plant/A/6")
        wait_until(lambda: r.llen("trt/A/todo/failed") == 1 and r.llen("trt/C/todo") == 2)
        text = get(daemon + "/metrics")[1]
        assert metric(text, "resc_todo_queues", queue="todo") == 1
        assert metric(text, "resc_todo_queues", queue=PLANT) == 3
        assert metric(text, "resc_todo_tasks", queue="todo") == 2
        assert metric(text, "resc_todo_tasks", queue=PLANT) == 3
        assert metric(text, "resc_todo_set_members", queue="todo") == 2
        assert metric(text, "resc_todo_set_members", queue=PLANT) == 3
        assert (
            0
            <= metric(text, "resc_todo_oldest_task_age_seconds", queue="todo")
            <= (time.time() - start + 1)
        )
        assert metric(text, "resc_todo_failed", queue=PLANT) == 1
        assert metric(text, "resc_todo_failed", queue="todo") == 0
        assert metric(text, "resc_todo_workers", queue=PLANT, state="alive") == 1
        assert metric(text, "resc_todo_workers", queue="todo", state="dead") == 1
        assert metric(text, "resc_todo_tasks_held", queue="todo") == 1
        assert 1 <= metric(text, "resc_todo_heartbeat_expiry_min_seconds", queue=PLANT) <= 3
        assert "job/" not in text and "w1" not in text and "trt/A" not in text
    finally:
        worker.stop()
        assert worker.wait(10)
    # A member that set_ttl removes is counted under its set pattern.
    r.zadd("trt/D/set", {"job/9": time.time() - 100})
    wait_until(lambda: r.exists("trt/D/set") == 0)
    text = wait_until(
        lambda: (
            (t := get(daemon + "/metrics")[1])
            and 'resc_set_members_expired_total{set="trt/${plant}/set"} 1.0' in t
            and t
        )
    )
    assert metric(text, "resc_set_expiry_failed_sweeps_total") == 0


def test_metrics_are_served_without_the_todo_families_while_redis_is_down(tmp_path):
    port = free_port()
    config = make_config(
        f"redis://127.0.0.1:{free_port()}/0",
        [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "todo", "set": "s"}}]}],
    )
    process = resc_process(
        "run", "--http", f"127.0.0.1:{port}", str(write_config(tmp_path, config))
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(base))
        status, text = get(base + "/metrics")
        assert status == 200
        assert "resc_set_expiry_failed_sweeps_total 0.0" in text
        assert "resc_todo_tasks{" not in text
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
