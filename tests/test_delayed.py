"""Delayed tasks: a make's `delay` or `at` puts its task into the queue's delayed tasks in
the commit, and the scheduler pushes it into the queue when it is due, exactly once."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from resc.config.load import config_from_source
from resc.config.models import Make
from resc.config.source import read_source
from resc.core.errors import EventError
from resc.core.failures import decode
from resc.dev.embedded import free_port
from resc.engine.rules import RuleSet
from resc.engine.scheduler import BATCH, Scheduler, SchedulerStats
from tests.conftest import (
    drained,
    make_config,
    resc_process,
    run_resc,
    running,
    wait_until,
    write_config,
)
from tests.test_metrics import _answers, get, metric


def rule(**make: Any) -> dict[str, Any]:
    make.setdefault("task", "${id}")
    return {"name": "later", "on": r"^(?P<id>\w+)(?: (?P<when>\S+))?$", "make": make}


def reason(r: redis.Redis, event: str) -> str:
    (record,) = decode(r.hget("in/failed/reasons", event))
    return record.reason


def config_of(url: str, *makes: dict[str, Any], **watcher: Any) -> dict[str, Any]:
    rules = [rule(**make) for make in makes]
    return make_config(url, [{"input_queue": "in", "rules": rules, **watcher}])


def delayed(r: redis.Redis, queue: str = "q") -> list[tuple[bytes, float]]:
    return r.zrange(f"{queue}/delayed", 0, -1, withscores=True)  # type: ignore[return-value]


def no_delayed_keys(r: redis.Redis) -> bool:
    return not r.keys("*delayed*")


# --- the config --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        ({"delay": "10 parsecs"}, "make.delay: '10 parsecs' is not a duration"),
        ({"delay": "-5s"}, "make.delay: '-5s' is not a duration"),
        ({"at": "tomorrow"}, "make.at: 'tomorrow' is not a point in time"),
        ({"at": "2026-12-01T08:00:00"}, "make.at: '2026-12-01T08:00:00' has no offset"),
        ({"delay": "1s", "at": "5"}, "make: give delay or at, not both"),
        ({"delay": ""}, "make.delay: must not be empty"),
        ({"delay": "${nope"}, "make.delay: ${ without its }"),
    ],
)
def test_a_wrong_delay_or_at_is_a_located_config_error(tmp_path, make, message):
    config = config_of("redis://127.0.0.1:1/0", {"queue": "q", **make})
    path = write_config(tmp_path, config)
    done = run_resc("check", str(path))
    said = done.stdout + done.stderr
    assert done.returncode != 0
    assert f"{path}:" in said
    assert message in said
    assert "Traceback" not in said


def test_a_delay_may_be_a_number_of_seconds_or_a_pattern():
    assert str(Make.model_validate({"queue": "q", "delay": 30}).delay) == "30"
    assert str(Make.model_validate({"queue": "q", "delay": 0.5}).delay) == "0.5"
    assert Make.model_validate({"queue": "q", "at": "${ts}"}).at.refs == ("ts",)  # type: ignore[union-attr]


def results_of(make: dict[str, Any], event: bytes) -> list[Any]:
    loaded = config_from_source_dict(config_of("redis://127.0.0.1:1/0", {"queue": "q", **make}))
    return RuleSet(loaded.watchers[0].rules).apply(event, lambda *_: [])


def config_from_source_dict(config: dict[str, Any]) -> Any:
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "conf.json"
        path.write_text(json.dumps(config))
        return config_from_source(read_source(path))


def test_due_times_from_delay_and_at():
    before = time.time()
    (result,) = results_of({"delay": "1.5m"}, b"a1")
    assert before + 90 <= result.due <= time.time() + 90
    (result,) = results_of({"delay": "${when}"}, b"a1 250ms")
    assert before + 0.25 <= result.due <= time.time() + 0.25
    (result,) = results_of({"at": "${when}"}, b"a1 1796112000.5")
    assert result.due == 1796112000.5
    (result,) = results_of({"at": "${when}"}, b"a1 2026-12-01T09:00:00+01:00")
    assert result.due == 1796112000.0
    (result,) = results_of({"at": "${when}"}, b"a1 2026-12-01T08:00:00.250Z")
    assert result.due == 1796112000.25
    (result,) = results_of({}, b"a1")
    assert result.due is None


@pytest.mark.parametrize(
    ("make", "event", "reason"),
    [
        ({"delay": "${when}"}, b"a1 soon", "make q: delay: 'soon' is not a duration"),
        ({"delay": "${when}"}, b"a1 1e999", "make q: delay: '1e999' is not a duration"),
        (
            {"at": "${when}"},
            "a1 \u00fc\u00fc".encode(),
            "make q: at: '\u00fc\u00fc' is not a point",
        ),
        ({"at": "${when}"}, b"a1 " + b"9" * 5000, "is not a point in time"),
    ],
)
def test_a_due_time_an_event_makes_wrong_fails_that_event(make, event, reason):
    with pytest.raises(EventError) as failed:
        results_of(make, event)
    assert reason in str(failed.value)
    assert len(str(failed.value)) < 400


# --- against a real Redis ----------------------------------------------------------


def test_a_delayed_task_is_pushed_when_due_and_not_before(r, redis_server, tmp_path):
    with running(config_of(redis_server.url, {"queue": "q", "delay": "1s"}), tmp_path):
        pushed_at = time.time()
        r.lpush("in", "a1")
        wait_until(lambda: drained(r, "in", "in/taken"))
        assert r.llen("q") == 0
        ((member, due_ms),) = delayed(r)
        assert member == b"1:a1"
        # The due time is kept in whole milliseconds.
        assert int((pushed_at + 1) * 1000) <= due_ms <= (time.time() + 1) * 1000
        assert r.smembers("in/delayed-queues") == {b"q"}
        wait_until(lambda: r.llen("q") == 1)
        assert time.time() >= due_ms / 1000
        # Pushed within the scheduler's promptness (the commit woke it, so well within
        # its longest sleep).
        assert time.time() - due_ms / 1000 < 1.0
    assert r.lrange("q", 0, -1) == [b"a1"]
    assert no_delayed_keys(r)


def test_delayed_tasks_become_due_in_order(r, redis_server, tmp_path):
    now = time.time()
    # Pushed in the reverse order of their due times, in one batch.
    events = [f"e{i} {now + 1 + (9 - i) * 0.05:.3f}" for i in range(10)]
    with running(config_of(redis_server.url, {"queue": "q", "at": "${when}"}), tmp_path):
        r.lpush("in", *events)
        wait_until(lambda: r.llen("q") == 10, timeout_s=15)
    # Workers take from the right: the first due comes first.
    assert r.lrange("q", 0, -1)[::-1] == [f"e{i}".encode() for i in reversed(range(10))]


def test_a_due_time_in_the_past_pushes_at_once(r, redis_server, tmp_path):
    with running(config_of(redis_server.url, {"queue": "q", "at": "${when}"}), tmp_path):
        r.lpush("in", "a1 1000000000", "a2 2001-09-09T01:46:40Z")
        wait_until(lambda: r.llen("q") == 2)
    assert no_delayed_keys(r)


def test_a_delayed_task_keeps_its_dedup(r, redis_server, tmp_path):
    make = {"queue": "q", "set": "s", "delay": "1s"}
    with running(config_of(redis_server.url, make), tmp_path):
        r.lpush("in", "a1", "a1")
        wait_until(lambda: drained(r, "in", "in/taken"))
        # One delayed task; the set holds it from the commit on, scored by its due time.
        ((member, due_ms),) = delayed(r)
        assert member.endswith(b":a1")
        assert r.zscore("s", "a1") == int(due_ms // 1000)
        r.lpush("in", "a1")  # still delayed: deduplicated
        wait_until(lambda: r.llen("q") == 1)
        r.lpush("in", "a1")  # queued, not done: deduplicated
        wait_until(lambda: drained(r, "in", "in/taken"))
        time.sleep(0.3)
    assert r.lrange("q", 0, -1) == [b"a1"]
    assert r.zrange("s", 0, -1) == [b"a1"]
    # A worker done with it (ZREM) lets it be made again.
    r.delete("q")
    r.zrem("s", "a1")
    with running(config_of(redis_server.url, make), tmp_path):
        r.lpush("in", "a1")
        wait_until(lambda: r.llen("q") == 1)


def test_identical_events_without_a_set_make_as_many_delayed_tasks(r, redis_server, tmp_path):
    with running(config_of(redis_server.url, {"queue": "q", "delay": "500ms"}), tmp_path):
        r.lpush("in", *["a1"] * 5)
        wait_until(lambda: r.llen("q") == 5)
        time.sleep(0.3)
    assert r.lrange("q", 0, -1) == [b"a1"] * 5


def test_a_make_with_a_delay_and_one_without(r, redis_server, tmp_path):
    config = make_config(
        redis_server.url,
        [
            {
                "input_queue": "in",
                "rules": [
                    {"on": "^a", "make": [{"queue": "now"}, {"queue": "later", "delay": "1s"}]}
                ],
            }
        ],
    )
    with running(config, tmp_path):
        r.lpush("in", "a1")
        wait_until(lambda: r.llen("now") == 1)
        assert r.llen("later") == 0
        wait_until(lambda: r.llen("later") == 1)


def test_an_event_whose_due_time_is_wrong_goes_to_the_failed_queue(r, redis_server, tmp_path):
    with running(config_of(redis_server.url, {"queue": "q", "delay": "${when}"}), tmp_path):
        r.lpush("in", "a1 whenever", "a2 1s")
        wait_until(lambda: r.llen("in/failed") == 1 and r.llen("q") == 1)
    assert r.lrange("in/failed", 0, -1) == [b"a1 whenever"]
    assert "'whenever' is not a duration" in reason(r, "a1 whenever")


def test_a_wrong_typed_delayed_key_fails_the_event_and_others_go_on(r, redis_server, tmp_path):
    r.set("bad/delayed", "x")
    config = config_of(redis_server.url, {"queue": "${id}", "delay": "200ms"})
    with running(config, tmp_path):
        r.lpush("in", "bad", "good")
        wait_until(lambda: r.llen("good") == 1)
        wait_until(lambda: r.llen("in/failed") == 1)
    assert r.lrange("in/failed", 0, -1) == [b"bad"]
    assert reason(r, "bad") == "key bad/delayed holds a string"


def test_the_scheduler_skips_a_queue_whose_key_turned_wrong(r, redis_server, tmp_path, caplog):
    config = config_of(redis_server.url, {"queue": "${id}", "delay": "300ms"})
    with running(config, tmp_path):
        r.lpush("in", "one", "two")
        wait_until(lambda: drained(r, "in", "in/taken") and len(delayed(r, "two")) == 1)
        r.delete("one")
        r.hset("one", "x", "y")  # the todo queue is now a hash
        wait_until(lambda: r.llen("two") == 1)
        time.sleep(0.2)
    assert r.type("one") == b"hash"
    assert len(delayed(r, "one")) == 1  # kept, not lost: pushed once the key is right
    assert "a key holds the wrong type" in caplog.text
    assert caplog.text.count("a key holds the wrong type") == 1
    r.delete("one")
    with running(config, tmp_path):
        wait_until(lambda: r.llen("one") == 1)


def test_delayed_tasks_survive_a_restart_of_redis_and_of_resc(restartable_redis, tmp_path):
    r = redis.Redis(port=restartable_redis.port)
    config = config_of(restartable_redis.url, {"queue": "q", "set": "s", "delay": "2s"})
    with running(config, tmp_path):
        r.lpush("in", *[f"a{i}" for i in range(100)])
        wait_until(lambda: drained(r, "in", "in/taken") and len(delayed(r)) == 100)
        restartable_redis.kill()
        time.sleep(0.5)
        restartable_redis.start()
        r = redis.Redis(port=restartable_redis.port)
        wait_until(lambda: r.llen("q") == 100, timeout_s=20)
    assert sorted(r.lrange("q", 0, -1)) == sorted(f"a{i}".encode() for i in range(100))
    # Delayed while resc was stopped: pushed when it starts again.
    config = config_of(restartable_redis.url, {"queue": "q2", "delay": "2s"})
    with running(config, tmp_path):
        r.lpush("in", "b")
        wait_until(lambda: drained(r, "in", "in/taken") and len(delayed(r, "q2")) == 1)
    ((_, due_ms),) = delayed(r, "q2")
    time.sleep(max(0.0, due_ms / 1000 - time.time()) + 0.3)
    assert r.llen("q2") == 0
    with running(config, tmp_path):
        wait_until(lambda: r.llen("q2") == 1)
    r.close()


def test_many_due_at_once_are_pushed_in_bounded_steps_exactly_once_by_two_schedulers(
    r, redis_server, tmp_path
):
    """Two schedulers (as two resc instances run them) on the same queues: each task is
    pushed once, in order of its due time."""
    count = 2 * BATCH + 500
    due_ms = int((time.time() + 1.5) * 1000)
    for queue in ("q1", "q2"):
        r.zadd(f"{queue}/delayed", {f"{i}:t{i}": due_ms + i // 10 for i in range(count)})
        r.set(f"{queue}/delayed/n", count)
    r.sadd("in/delayed-queues", "q1", "q2")
    loaded = config_from_source(read_source(write_config(tmp_path, config_of(redis_server.url))))
    stats = [SchedulerStats(), SchedulerStats()]
    schedulers = [Scheduler(loaded, s) for s in stats]
    for scheduler in schedulers:
        scheduler.start()
    try:
        wait_until(lambda: r.llen("q1") == count and r.llen("q2") == count, timeout_s=20)
        time.sleep(0.3)
    finally:
        for scheduler in schedulers:
            scheduler.close()
    expected = [f"t{i}".encode() for i in range(count)]
    for queue in ("q1", "q2"):
        taken_order = r.lrange(queue, 0, -1)[::-1]
        assert sorted(taken_order) == sorted(expected)  # each exactly once
        due = {t: due_ms + i // 10 for i, t in enumerate(expected)}
        assert [due[t] for t in taken_order] == sorted(due.values())  # in due order
    assert stats[0].pushed + stats[1].pushed == 2 * count
    assert no_delayed_keys(r)


def test_schedulers_racing_on_a_stream_of_commits_push_each_task_once(r, redis_server, tmp_path):
    """Commits of delayed tasks (two watchers, one todo queue) while two schedulers run."""
    config = make_config(
        redis_server.url,
        [{"input_queue": f"in{n}", "rules": [rule(queue="q", delay="${when}")]} for n in (1, 2)],
    )
    loaded = config_from_source(read_source(write_config(tmp_path, config)))
    extra = Scheduler(loaded, SchedulerStats())
    extra.start()
    try:
        with running(config, tmp_path):
            stop = threading.Event()

            def produce(queue: str) -> None:
                for i in range(1000):
                    r.lpush(queue, f"{queue}_{i} {i % 7 * 50}ms")

            producers = [threading.Thread(target=produce, args=(q,)) for q in ("in1", "in2")]
            for p in producers:
                p.start()
            for p in producers:
                p.join()
            stop.set()
            wait_until(lambda: r.llen("q") == 2000, timeout_s=30)
            time.sleep(0.5)
    finally:
        extra.close()
    tasks = r.lrange("q", 0, -1)
    assert sorted(tasks) == sorted(f"{q}_{i}".encode() for q in ("in1", "in2") for i in range(1000))
    assert no_delayed_keys(r)


def test_resc_status_shows_delayed_counts_and_the_next_due_time(r, redis_server, tmp_path):
    config = config_of(redis_server.url, {"queue": "q", "set": "s", "delay": "1h"})
    path = write_config(tmp_path, config)
    with running(config, tmp_path):
        r.lpush("in", "a1", "a2", "a3")
        wait_until(lambda: len(delayed(r)) == 3)
    done = run_resc("status", str(path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.startswith("TODO QUEUE"))
    row = next(line for line in lines if line.startswith("q "))
    assert header.split()[:5] == ["TODO", "QUEUE", "TASKS", "DELAYED", "SET"]
    assert row.split()[:4] == ["q", "0", "3", "3"], done.stdout
    assert "next due in 59 min" in row or "next due in 60 min" in row, done.stdout
    as_json = run_resc("status", "--json", str(path))
    assert as_json.returncode == 0, as_json.stderr
    import json

    queue = next(q for q in json.loads(as_json.stdout)["todo"] if q["queue"] == "q")
    assert queue["delayed"] == 3
    assert time.time() + 3500 < queue["next_due"] < time.time() + 3601


def test_metrics_count_delayed_tasks_and_those_made_due(r, redis_server, tmp_path):
    config = make_config(
        redis_server.url,
        [
            {
                "input_queue": "in",
                "rules": [
                    {"name": "soon", "on": "^s", "make": {"queue": "q", "delay": "500ms"}},
                    {"name": "late", "on": "^l", "make": {"queue": "q", "delay": "1h"}},
                ],
            }
        ],
    )
    port = free_port()
    process = resc_process(
        "run", "--http", f"127.0.0.1:{port}", str(write_config(tmp_path, config))
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(base))
        r.lpush("in", "s1", "s2", "l1")
        wait_until(lambda: r.llen("q") == 2)

        def scraped() -> bool:
            text = get(base + "/metrics")[1]
            return (
                metric(text, "resc_delayed_tasks_due_total") == 2
                and metric(text, "resc_tasks_delayed_total", rule="soon", watcher="in") == 2
                and metric(text, "resc_tasks_delayed_total", rule="late", watcher="in") == 1
                and metric(text, "resc_todo_delayed", queue="q") == 1
                and 3500 < metric(text, "resc_todo_next_due_seconds", queue="q") <= 3600
            )

        wait_until(scraped)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0


def test_two_resc_instances_push_each_delayed_task_once(r, redis_server, tmp_path):
    """Two resc processes on one config share the backlog and both schedule."""
    count = 3000
    config = config_of(redis_server.url, {"queue": "q", "set": "s", "delay": "${when}"})
    path = str(write_config(tmp_path, config))
    processes = [resc_process("--instance", name, path) for name in ("one", "two")]
    try:
        wait_until(lambda: r.scard("in/taken/instances") == 2, timeout_s=30)
        # Each due between 0.5 s and 2 s from its commit; half of them twice (deduplicated).
        events = [f"t{i % (count // 2)} {500 + i % 1500}ms" for i in range(count)]
        r.lpush("in", *events)
        wait_until(lambda: r.llen("q") == count // 2, timeout_s=60)
        time.sleep(2.5)  # anything pushed twice would be there by now
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            assert process.wait(20) == 0
    assert sorted(r.lrange("q", 0, -1)) == sorted(f"t{i}".encode() for i in range(count // 2))
    assert r.zcard("s") == count // 2
    assert no_delayed_keys(r)
