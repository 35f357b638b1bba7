"""Faults survived with nothing lost or duplicated: interrupted (poison) events, replay,
reloads, concurrency, Redis outages, bad input, kills during fetches."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from resc.config.load import config_from_source
from resc.config.source import read_source
from resc.engine.daemon import Daemon
from tests.conftest import (
    RedisServer,
    drained,
    in_hand,
    make_config,
    resc_process,
    run_resc,
    running,
    wait_until,
    write_config,
)
from tests.test_failures import failed_records
from tests.webservice import ScriptedService


class Lines:
    """The stderr lines of a child process, collected as they come."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stderr is not None
        self._thread = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)


def fetch_rule(web: ScriptedService) -> dict[str, Any]:
    return {
        "name": "lookup",
        "on": r"^(?P<kind>\w+)/(?P<n>\d+)$",
        "fetch": [{"url": web.url + "/${kind}", "returns": "db"}],
        "make": {"task": "${db.prefix}/${n}", "queue": "out"},
    }


def test_an_event_interrupted_max_attempts_times_goes_to_the_failed_queue(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path, web: ScriptedService
):
    web.answer("/hang", {"prefix": "never"}, delay_s=30)
    web.answer("/ok", {"prefix": "fine"})
    config = make_config(
        redis_server.url, [{"input_queue": "in", "max_attempts": 3, "rules": [fetch_rule(web)]}]
    )
    path = str(write_config(tmp_path, config))
    r.lpush("in", "hang/1")
    for attempt in range(1, 4):
        process = resc_process(path)
        wait_until(lambda a=attempt: web.paths.count("/hang") == a)
        process.send_signal(signal.SIGKILL)  # a crash while the event is in hand
        process.wait()
        assert in_hand(r) == [b"hang/1"]
    process = resc_process(path)
    try:
        wait_until(lambda: r.llen("in/failed") == 1)
        r.lpush("in", "ok/2")
        wait_until(lambda: r.llen("out") == 1)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    assert web.paths.count("/hang") == 3  # not tried a fourth time
    assert r.lrange("in/failed", 0, -1) == [b"hang/1"]
    (record,) = failed_records(r, "hang/1")
    assert (record.reason, record.attempts) == (
        "interrupted 3 times (resc stopped or lost Redis while processing it): "
        "given up after max_attempts",
        3,
    )
    assert r.lrange("out", 0, -1) == [b"fine/2"]
    assert r.hlen("in/taken/attempts") == 0
    assert drained(r, "in", "in/taken")


def test_a_poison_event_alone_reaches_max_attempts_not_its_neighbours(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path, web: ScriptedService
):
    web.answer("/hang", {"prefix": "never"}, delay_s=30)
    web.answer("/ok", {"prefix": "fine"})
    config = make_config(
        redis_server.url,
        [{"input_queue": "in", "max_attempts": 3, "batch": 20, "rules": [fetch_rule(web)]}],
    )
    path = str(write_config(tmp_path, config))
    # A backlog: the poison in the middle of a batch, and batches taken ahead after it.
    innocent = [f"ok/{i}" for i in range(60)]
    r.lpush("in", *innocent[:10], "hang/1", *innocent[10:])
    for attempt in range(1, 4):
        process = resc_process(path)
        wait_until(lambda a=attempt: web.paths.count("/hang") == a)
        process.send_signal(signal.SIGKILL)
        process.wait()
    process = resc_process(path)
    try:
        wait_until(lambda: r.llen("out") == 60 and drained(r, "in", "in/taken"), timeout_s=30)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    assert r.lrange("in/failed", 0, -1) == [b"hang/1"]
    assert web.paths.count("/hang") == 3
    assert sorted(r.lrange("out", 0, -1)) == sorted(f"fine/{i}".encode() for i in range(60))
    assert r.hlen("in/taken/attempts") == 0


def test_an_event_committed_after_an_interruption_forgets_its_attempts(r, redis_server, tmp_path):
    config = make_config(
        redis_server.url, [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "out"}}]}]
    )
    r.lpush("in/taken", "e")  # as left by a crash
    with running(config, tmp_path):
        wait_until(lambda: r.llen("out") == 1)
        wait_until(lambda: not r.exists("in/taken/attempts"))
    assert r.lrange("out", 0, -1) == [b"e"]


def test_replay_lists_then_moves_failed_events_back(r, redis_server, tmp_path, web):
    web.answer("/svc", {"prefix": "x"}, status=404)  # not retried
    config = make_config(
        redis_server.url,
        [
            {"input_queue": "in", "rules": [fetch_rule(web)]},
            {"input_queue": "other", "rules": [{"on": "", "make": {"queue": "o"}}]},
        ],
    )
    path = write_config(tmp_path, config)
    with running(config, tmp_path):
        r.lpush("in", "svc/1", "svc/2", "svc/3")
        wait_until(lambda: r.llen("in/failed") == 3)
    reason = f"GET {web.url}/svc: HTTP 404 Not Found"
    listed = run_resc("replay", str(path), "--dry-run", "--limit", "2")
    assert (listed.returncode, listed.stderr) == (0, "")
    assert listed.stdout.splitlines() == [
        "in/failed: 3 failed events (the oldest 2 listed)",
        f"  svc/1  <- {reason}",
        f"  svc/2  <- {reason}",
        "other/failed: 0 failed events",
    ]
    assert r.llen("in/failed") == 3  # a dry run changes nothing

    web.answer("/svc", {"prefix": "fixed"})
    moved = run_resc("replay", str(path), "--watcher", "in", "--limit", "2")
    assert (moved.returncode, moved.stdout) == (0, "in/failed: 2 events moved back to in\n")
    assert r.lrange("in", 0, -1) == [b"svc/2", b"svc/1"]
    assert r.lrange("in/failed", 0, -1) == [b"svc/3"]
    assert r.hkeys("in/failed/reasons") == [b"svc/3"]
    with running(config, tmp_path):
        wait_until(lambda: r.llen("out") == 2)
    assert sorted(r.lrange("out", 0, -1)) == [b"fixed/1", b"fixed/2"]

    rest = run_resc("replay", str(path))
    assert rest.stdout == (
        "in/failed: 1 event moved back to in\nother/failed: 0 events moved back to other\n"
    )
    unknown = run_resc("replay", str(path), "--watcher", "nope")
    assert unknown.returncode == 2
    assert unknown.stderr == "resc: no watcher has input queue 'nope' (in, other)\n"
    zero = run_resc("replay", str(path), "--limit", "0")
    assert zero.returncode == 2
    assert "argument --limit: must be at least 1, not 0" in zero.stderr


def test_replay_while_resc_fails_the_events_again_moves_each_once(r, redis_server, tmp_path):
    config = make_config(
        redis_server.url,
        [{"input_queue": "in", "rules": [{"on": "^(?P<a>x)(?P<b>y)?", "make": {"queue": "${b}"}}]}],
    )
    path = write_config(tmp_path, config)
    with running(config, tmp_path):
        r.lpush("in", *(f"x{i}" for i in range(200)))
        wait_until(lambda: r.llen("in/failed") == 200)
        moved = run_resc("replay", str(path))
        wait_until(lambda: r.llen("in/failed") == 200 and drained(r, "in", "in/taken"))
    assert (moved.returncode, moved.stdout) == (0, "in/failed: 200 events moved back to in\n")
    (record,) = failed_records(r, "x7")  # failed again after the replay
    assert record.reason == "variable ${b} has no value for this event"


def test_concurrency_keeps_that_many_fetches_in_flight_and_commits_each_when_done(
    r, redis_server, tmp_path, web
):
    web.answer("/slow", {"prefix": "done"}, delay_s=0.3)
    config = make_config(
        redis_server.url,
        [{"input_queue": "in", "concurrency": 4, "rules": [fetch_rule(web)]}],
    )
    events = [f"slow/{i}".encode() for i in range(8)]
    r.lpush("in", *events)
    with running(config, tmp_path):
        wait_until(lambda: r.llen("out") == 8)
    assert web.max_in_flight == 4
    # The second four are taken as the first four finish, and committed after them.
    pushed = r.lrange("out", 0, -1)[::-1]
    assert sorted(pushed[:4]) == [f"done/{i}".encode() for i in range(4)]
    assert sorted(pushed[4:]) == [f"done/{i}".encode() for i in range(4, 8)]


def test_without_concurrency_one_request_at_a_time(r, redis_server, tmp_path, web):
    web.answer("/slow", {"prefix": "done"}, delay_s=0.05)
    config = make_config(redis_server.url, [{"input_queue": "in", "rules": [fetch_rule(web)]}])
    r.lpush("in", *(f"slow/{i}" for i in range(4)))
    with running(config, tmp_path):
        wait_until(lambda: r.llen("out") == 4)
    assert web.max_in_flight == 1


def reloading_config(url: str, task: str, **extra: Any) -> dict[str, Any]:
    return make_config(
        url,
        [{"input_queue": "in", "rules": [{"on": "^e", "make": {"task": task, "queue": "out"}}]}],
        **extra,
    )


def test_sighup_reloads_a_valid_config_and_keeps_the_old_one_when_invalid(
    r, redis_server, tmp_path
):
    path = write_config(tmp_path, reloading_config(redis_server.url, "old/${input_task}"))
    process = resc_process(str(path), env={"RESC_LOG": "info"})
    log = Lines(process)
    try:
        r.lpush("in", "e1")
        wait_until(lambda: r.lrange("out", 0, -1) == [b"old/e1"])

        new = reloading_config(redis_server.url, "new/${input_task}")
        new["watchers"].append(
            {"input_queue": "in2", "rules": [{"on": "", "make": {"queue": "o2"}}]}
        )
        path.write_text(json.dumps(new))
        process.send_signal(signal.SIGHUP)
        wait_until(lambda: log.count("[INFO] - config reloaded") == 1)
        r.lpush("in", "e2")
        r.lpush("in2", "x")
        wait_until(lambda: r.llen("out") == 2 and r.llen("o2") == 1)
        assert r.lrange("out", 0, -1) == [b"new/e2", b"old/e1"]

        path.write_text('{"redis": {"url": "redis://x/"}, "watchers": [{"input_queue": 3}]}')
        process.send_signal(signal.SIGHUP)
        wait_until(lambda: log.count("config not reloaded") == 1)
        r.lpush("in", "e3")
        wait_until(lambda: r.llen("out") == 3)
        assert r.lrange("out", 0, 0) == [b"new/e3"]

        path.write_text(json.dumps(reloading_config(redis_server.url, "last/${input_task}")))
        process.send_signal(signal.SIGHUP)
        wait_until(lambda: log.count("[INFO] - config reloaded") == 2)
        r.lpush("in2", "y")  # its watcher was removed: nobody takes this
        r.lpush("in", "e4")
        wait_until(lambda: r.llen("out") == 4)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    assert r.lrange("out", 0, 0) == [b"last/e4"]
    assert r.lrange("in2", 0, -1) == [b"y"]
    assert r.llen("o2") == 1
    problems = [line for line in log.lines if "config not reloaded" in line]
    assert "watchers[0].input_queue: Input should be a valid string" in problems[0]


def test_watch_config_reloads_when_the_file_changes(r, redis_server, tmp_path):
    path = write_config(tmp_path, reloading_config(redis_server.url, "old"))
    process = resc_process("run", "--watch-config", str(path), env={"RESC_LOG": "info"})
    log = Lines(process)
    try:
        r.lpush("in", "e1")
        wait_until(lambda: r.llen("out") == 1)
        path.write_text(json.dumps(reloading_config(redis_server.url, "new")))
        wait_until(lambda: log.count("config reloaded") == 1)
        r.lpush("in", "e2")
        wait_until(lambda: r.llen("out") == 2)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    assert r.lrange("out", 0, -1) == [b"new", b"old"]


def test_bad_input_never_stops_a_watcher(r, redis_server, tmp_path):
    config = make_config(
        redis_server.url,
        [
            {
                "input_queue": "in",
                "rules": [
                    {"on": r"^(?P<head>\w{0,3})", "make": {"task": "t/${head}", "queue": "out"}},
                    {"on": "(a|aa)+$", "make": {"task": "long", "queue": "long"}},
                ],
            }
        ],
    )
    huge = b"a" * 10_000_000
    with running(config, tmp_path):
        r.lpush("in", b"", huge, b"\x00\xff\xfe binary", b"\xe9t\xe9", b"after")
        wait_until(lambda: r.llen("out") == 3 and r.llen("in/failed") == 2, timeout_s=60)
        wait_until(lambda: drained(r, "in", "in/taken"))
    assert r.lrange("out", 0, -1) == [b"t/aft", b"t/aaa", b"t/"]
    assert r.lrange("long", 0, -1) == [b"long"]
    assert r.lrange("in/failed", 0, -1) == [b"\xe9t\xe9", b"\x00\xff\xfe binary"]


def test_redis_outage_is_logged_once_each_way_and_processing_resumes(tmp_path):
    server = RedisServer(tmp_path, "--appendonly", "yes", "--appendfsync", "always")
    server.start()
    client = server.client()
    config = make_config(
        server.url, [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "out"}}]}]
    )
    process = resc_process(str(write_config(tmp_path, config)), env={"RESC_LOG": "info"})
    log = Lines(process)
    try:
        client.lpush("in", "before")
        wait_until(lambda: client.llen("out") == 1)
        server.kill()
        wait_until(lambda: log.count("Redis unavailable") == 1)
        threading.Event().wait(1.5)  # several reconnection attempts while it is down
        server.start()
        wait_until(lambda: log.count("Redis is back") == 1, timeout_s=20)
        client.lpush("in", "after")
        wait_until(lambda: client.llen("out") == 2)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
        client.close()
        server.kill()
    assert log.count("Redis unavailable") == 1
    assert log.count("Redis is back") == 1


# kill -9 in a backlog is tested on each server by test_crash.py; this long run on Redis only.
@pytest.mark.slow
def test_sigkill_at_random_points_of_a_fetch_backlog_then_every_task_once(
    r, redis_server, tmp_path, web
):
    count = 3_000
    web.answer("/item", {"prefix": "task"})
    config = make_config(
        redis_server.url,
        [{"input_queue": "in", "concurrency": 4, "rules": [fetch_rule(web)]}],
    )
    path = str(write_config(tmp_path, config))
    r.lpush("in", *(f"item/{i}" for i in range(count)))
    chance = random.Random(7)
    for _ in range(4):
        process = resc_process(path)
        target = r.llen("out") + chance.randint(50, 500)
        wait_until(lambda t=target: r.llen("out") >= t, timeout_s=60)
        process.send_signal(signal.SIGKILL)
        process.wait()
    process = resc_process(path)
    try:
        wait_until(lambda: r.llen("out") >= count and drained(r, "in", "in/taken"), timeout_s=120)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    tasks = Counter(r.lrange("out", 0, -1))
    assert len(tasks) == count and max(tasks.values()) == 1
    assert r.llen("in/failed") == 0


def test_a_reload_to_an_embedded_redis_is_refused(r, redis_server, tmp_path):
    config = reloading_config(redis_server.url, "kept")
    path = write_config(tmp_path, config)
    daemon = Daemon(config_from_source(read_source(path)), path)
    daemon.start()
    try:
        path.write_text(json.dumps(reloading_config("embedded", "never")))
        assert daemon.reload() is False
        r.lpush("in", "e1")
        wait_until(lambda: r.lrange("out", 0, -1) == [b"kept"])
    finally:
        daemon.stop.set()
        assert daemon.wait() == 0


def test_a_reload_restarts_only_the_watchers_whose_settings_changed(r, redis_server, tmp_path):
    config = reloading_config(redis_server.url, "t")
    config["watchers"].append({"input_queue": "in2", "rules": [{"on": "", "make": {"queue": "o"}}]})
    path = write_config(tmp_path, config)
    daemon = Daemon(config_from_source(read_source(path)), path)
    daemon.start()
    try:
        before = {name: watcher for name, (watcher, _) in daemon._running.items()}
        config["watchers"][0]["batch"] = 7  # a setting: a new watcher
        config["watchers"][1]["rules"][0]["make"]["queue"] = "o2"  # rules only: the same
        path.write_text(json.dumps(config))
        assert daemon.reload() is True
        after = {name: watcher for name, (watcher, _) in daemon._running.items()}
        assert after["in"] is not before["in"] and after["in"].config.batch == 7
        assert after["in2"] is before["in2"]
        r.lpush("in2", "x")
        wait_until(lambda: r.lrange("o2", 0, -1) == [b"x"])
        config["listener_channel"] = "events"  # for every watcher: all new
        path.write_text(json.dumps(config))
        assert daemon.reload() is True
        again = {name: watcher for name, (watcher, _) in daemon._running.items()}
        assert all(again[name] is not after[name] for name in after)
    finally:
        daemon.stop.set()
        assert daemon.wait() == 0
