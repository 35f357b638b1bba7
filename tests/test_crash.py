"""Nothing lost, nothing duplicated: resc killed with SIGKILL, and Redis killed, in the
middle of a backlog."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest
import redis

from tests.conftest import (
    RedisServer,
    drained,
    in_hand,
    make_config,
    resc_process,
    running,
    wait_until,
    write_config,
)

BACKLOG = 20_000


def backlog_config(url: str) -> dict[str, object]:
    # No set: only the atomic commit stands between a crash and a duplicated task.
    return make_config(
        url,
        [
            {
                "input_queue": "in",
                "rules": [
                    {"on": r"^ev/(?P<n>\d+)$", "make": {"task": "task/${n}", "queue": "todo"}}
                ],
            }
        ],
    )


def preload(client: redis.Redis, count: int) -> None:
    pipe = client.pipeline(transaction=False)
    for start in range(0, count, 1000):
        pipe.lpush("in", *(f"ev/{i}" for i in range(start, min(start + 1000, count))))
    pipe.execute()


def assert_exactly_once(client: redis.Redis, count: int) -> None:
    tasks = Counter(client.lrange("todo", 0, -1))
    assert len(tasks) == count, f"{count - len(tasks)} tasks missing"
    assert max(tasks.values()) == 1, f"duplicated: {[t for t, n in tasks.items() if n > 1][:5]}"
    assert set(tasks) == {f"task/{i}".encode() for i in range(count)}


def test_sigkill_during_a_backlog_then_restart_gives_one_task_per_event(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
):
    preload(r, BACKLOG)
    path = write_config(tmp_path, backlog_config(redis_server.url))
    caught_in_hand = 0
    for kill_at in (2_000, 8_000, 14_000):
        process = resc_process(str(path))
        wait_until(lambda at=kill_at: r.llen("todo") >= at, timeout_s=60)
        process.send_signal(signal.SIGKILL)
        process.wait()
        in_flight = len(in_hand(r))
        caught_in_hand += in_flight
        print(f"killed at {r.llen('todo')} tasks, {in_flight} events in the taken queue")
    # The kills caught resc with events taken but not committed: what recovery is for.
    assert caught_in_hand > 0
    process = resc_process(str(path))
    try:
        wait_until(lambda: r.llen("todo") >= BACKLOG and drained(r, "in", "in/taken"), timeout_s=60)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    assert_exactly_once(r, BACKLOG)


def test_redis_killed_and_restarted_during_a_backlog_loses_and_duplicates_nothing(tmp_path: Path):
    # An AOF fsynced at every write, so that a Redis killed with SIGKILL comes back with
    # every write it acknowledged.
    server = RedisServer(tmp_path, "--appendonly", "yes", "--appendfsync", "always")
    server.start()
    client = server.client()
    try:
        preload(client, BACKLOG)
        with running(backlog_config(server.url), tmp_path):
            for kill_at in (3_000, 9_000, 15_000):
                wait_until(lambda at=kill_at: client.llen("todo") >= at, timeout_s=60)
                server.kill()
                server.start()
            wait_until(
                lambda: client.llen("todo") >= BACKLOG and drained(client, "in", "in/taken"),
                timeout_s=60,
            )
        assert_exactly_once(client, BACKLOG)
    finally:
        client.close()
        server.kill()


# A long run: on Redis only (instances cooperating are tested on each server by
# test_instances.py).
@pytest.mark.slow
def test_a_second_resc_during_a_backlog_cooperates_and_the_first_killed_loses_nothing(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
):
    count = 10 * BACKLOG  # still busy with it when the second one has started
    preload(r, count)
    path = str(write_config(tmp_path, backlog_config(redis_server.url)))
    first = resc_process("--instance", "one", "--heartbeat-ttl", "3", path)
    second = None
    try:
        wait_until(lambda: r.llen("todo") >= 2_000, timeout_s=60)
        # A second resc on the same queues is no longer refused: it takes its share.
        second = resc_process("run", "--instance", "two", "--heartbeat-ttl", "3", path)
        wait_until(lambda: r.scard("in/taken/instances") == 2, timeout_s=30)
        assert first.poll() is None
        wait_until(lambda: r.llen("in/taken/one") and r.llen("in/taken/two"), timeout_s=30)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The first one's events in hand go back once its heartbeat has expired.
    try:
        wait_until(lambda: r.llen("todo") >= count and drained(r, "in", "in/taken"), timeout_s=120)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=20) == 0
    assert_exactly_once(r, count)
    # The events in hand at the kill were counted once, and forgotten when committed.
    assert not r.exists("in/failed", "in/taken/attempts", "in/taken/instances")
