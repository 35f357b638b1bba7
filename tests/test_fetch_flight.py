"""Events in flight on a watcher's event loop: each is committed when its fetches are
done, without waiting for slower ones; a kill -9 in a fetch backlog loses and
duplicates nothing; identical events in flight each count once."""

from __future__ import annotations

import signal
import time
from collections import Counter
from typing import Any

from tests.conftest import (
    drained,
    in_hand,
    make_config,
    resc_process,
    running,
    wait_until,
    write_config,
)
from tests.webservice import ScriptedService


def fetch_rule(web: ScriptedService, **make: Any) -> dict[str, Any]:
    return {
        "on": r"^(?P<kind>\w+)/(?P<n>\d+)$",
        "fetch": [{"url": web.url + "/${kind}", "returns": "db"}],
        "make": {"task": "${db.prefix}/${n}", "queue": "out", **make},
    }


def test_fast_events_are_committed_while_a_slow_fetch_is_in_flight(r, redis_server, tmp_path, web):
    web.answer("/slow", {"prefix": "slow"}, delay_s=4)
    web.answer("/fast", {"prefix": "fast"})
    config = make_config(
        redis_server.url,
        [{"input_queue": "in", "concurrency": 4, "rules": [fetch_rule(web)]}],
    )
    fast = [f"fast/{i}" for i in range(1, 30)]
    r.lpush("in", "slow/0", *fast)  # the slow one first
    with running(config, tmp_path):
        wait_until(lambda: web.paths.count("/slow") == 1)
        started = time.monotonic()
        wait_until(lambda: r.llen("out") == len(fast))
        # Every fast event done and committed while the slow answer is still awaited.
        assert web.in_flight == 1 and time.monotonic() - started < 3.5
        assert in_hand(r) == [b"slow/0"]
        assert sorted(r.lrange("out", 0, -1)) == sorted(f"fast/{i}".encode() for i in range(1, 30))
        wait_until(lambda: r.llen("out") == len(fast) + 1 and drained(r, "in", "in/taken"))
    assert r.lrange("out", 0, 0) == [b"slow/0"]  # committed last, once answered


def test_kill_9_in_a_fetch_backlog_then_every_task_exactly_once(r, redis_server, tmp_path, web):
    count = 600
    web.answer("/item", {"prefix": "task"}, delay_s=0.005)
    config = make_config(
        redis_server.url,
        [{"input_queue": "in", "concurrency": 16, "rules": [fetch_rule(web, set="done")]}],
    )
    path = str(write_config(tmp_path, config))
    r.lpush("in", *(f"item/{i}" for i in range(count)))
    for target in (100, 300):
        process = resc_process(path)
        wait_until(lambda t=target: r.llen("out") >= t, timeout_s=60)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert in_hand(r)  # killed with fetches in flight
    process = resc_process(path)
    try:
        wait_until(lambda: r.llen("out") >= count and drained(r, "in", "in/taken"), timeout_s=60)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    tasks = Counter(r.lrange("out", 0, -1))
    assert len(tasks) == count and max(tasks.values()) == 1
    assert r.zcard("done") == count
    assert r.llen("in/failed") == 0


def test_identical_events_in_flight_together_each_count_once(r, redis_server, tmp_path, web):
    # Long enough for all 8 to be in flight together even on a loaded machine.
    web.answer("/same", {"prefix": "same"}, delay_s=1.0)
    rules = [fetch_rule(web, set="seen"), {**fetch_rule(web), "make": {"queue": "all"}}]
    config = make_config(
        redis_server.url, [{"input_queue": "in", "concurrency": 8, "rules": rules}]
    )
    r.lpush("in", *(["same/1"] * 12))
    with running(config, tmp_path):
        wait_until(lambda: r.llen("all") == 12 and drained(r, "in", "in/taken"))
    assert web.max_in_flight == 8
    assert r.lrange("out", 0, -1) == [b"same/1"]  # deduplicated through the set
    assert r.lrange("all", 0, -1) == [b"same/1"] * 12  # one task per event, none lost
    assert r.llen("in/failed") == 0


def test_max_connections_caps_the_requests_at_once_below_concurrency(
    r, redis_server, tmp_path, web
):
    web.answer("/item", {"prefix": "task"}, delay_s=0.1)
    watcher = {"input_queue": "in", "concurrency": 8, "max_connections": 2}
    config = make_config(redis_server.url, [{**watcher, "rules": [fetch_rule(web)]}])
    r.lpush("in", *(f"item/{i}" for i in range(12)))
    with running(config, tmp_path):
        wait_until(lambda: r.llen("out") == 12 and drained(r, "in", "in/taken"))
    assert web.max_in_flight == 2
    assert sorted(r.lrange("out", 0, -1)) == sorted(f"task/{i}".encode() for i in range(12))
