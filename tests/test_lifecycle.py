"""Starting, stopping and waiting for Redis, through the command line."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from resc.config.load import config_from_source
from resc.config.source import read_source
from resc.engine.daemon import Daemon
from resc.engine.watcher import Watcher
from tests.conftest import (
    RedisServer,
    ScriptedService,
    in_hand,
    make_config,
    resc_process,
    run_resc,
    wait_until,
    write_config,
)
from tests.webservice import Answer, scripted_service


def slow_fetch_config(redis_url: str, web: ScriptedService) -> dict[str, object]:
    return make_config(
        redis_url,
        [
            {
                "input_queue": "in",
                "rules": [
                    {
                        "on": "^slow$",
                        "fetch": [{"url": web.url + "/slow", "returns": "s"}],
                        "make": {"task": "${s.v}", "queue": "out"},
                    }
                ],
            }
        ],
    )


def test_sigterm_finishes_the_event_in_hand_then_exits_0(r, redis_server, tmp_path, web):
    web.answer("/slow", {"v": "finished"}, delay_s=1.5)
    process = resc_process(str(write_config(tmp_path, slow_fetch_config(redis_server.url, web))))
    r.lpush("in", "slow")
    wait_until(lambda: web.paths == ["/slow"])
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    assert r.lrange("out", 0, -1) == [b"finished"]
    assert r.llen("in/taken") == 0


def test_second_signal_exits_at_once_leaving_the_event_taken(r, redis_server, tmp_path, web):
    web.answer("/slow", {"v": "never"}, delay_s=8)
    process = resc_process(str(write_config(tmp_path, slow_fetch_config(redis_server.url, web))))
    r.lpush("in", "slow")
    wait_until(lambda: web.paths == ["/slow"])
    process.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=5) == 130
    # In its taken list: put back when another instance sees its heartbeat expire.
    assert in_hand(r) == [b"slow"]
    assert r.llen("out") == 0


def test_starting_with_redis_down_waits_for_it(tmp_path: Path):
    server = RedisServer(tmp_path)
    config = make_config(
        server.url, [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "out"}}]}]
    )
    log_path = tmp_path / "resc.log"
    with log_path.open("w") as log_file:
        process = resc_process(
            str(write_config(tmp_path, config)), env={"RESC_LOG": "info"}, stderr=log_file
        )
    try:
        # Redis starts only once resc has found it down, however slowly resc starts.
        wait_until(lambda: "Redis unavailable" in log_path.read_text(), timeout_s=20)
        assert process.poll() is None
        server.start()
        client = server.client()
        client.lpush("in", "e")
        wait_until(lambda: client.llen("out") == 1, timeout_s=20)
        client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)
        server.kill()
    stderr = log_path.read_text()
    assert process.returncode == 0
    assert "[WARN] - Redis unavailable, retrying watcher=in" in stderr
    assert "[INFO] - Redis is back watcher=in" in stderr


def test_fail_fast_exits_1_when_redis_cannot_be_reached(tmp_path: Path):
    server = RedisServer(tmp_path)  # never started
    config = make_config(
        server.url, [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "out"}}]}]
    )
    done = run_resc("run", "--fail-fast", str(write_config(tmp_path, config)))
    assert done.returncode == 1
    assert done.stderr.startswith(
        f"resc: Redis cannot be reached (--fail-fast): connecting to {server.url}: "
        "connection lost: "
    )


def test_sigterm_during_a_retry_wait_exits_at_once_and_puts_the_event_back(
    r, redis_server, tmp_path
):
    with scripted_service() as service:
        service.script("/busy", Answer({}, status=503, headers={"Retry-After": "30"}))
        rule = {
            "on": "^busy$",
            "fetch": [{"url": service.url + "/busy", "returns": "s"}],
            "make": {"queue": "out"},
        }
        config = make_config(redis_server.url, [{"input_queue": "in", "rules": [rule]}])
        process = resc_process(str(write_config(tmp_path, config)))
        r.lpush("in", "busy")
        wait_until(lambda: len(service.requests_to("/busy")) == 1)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert time.monotonic() - started < 5  # not the 30 s Retry-After
    assert r.lrange("in", 0, -1) == [b"busy"]  # neither failed nor lost
    assert r.llen("in/taken") == 0 and r.llen("in/failed") == 0


def test_after_the_grace_period_the_fetch_is_abandoned_and_the_event_put_back(
    r, redis_server, tmp_path, web
):
    web.answer("/slow", {"v": "late"}, delay_s=10)
    config = slow_fetch_config(redis_server.url, web)
    config["grace_period"] = 0.5
    process = resc_process(str(write_config(tmp_path, config)))
    r.lpush("in", "slow")
    wait_until(lambda: web.paths == ["/slow"])
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=8)  # well before the 10 s answer
    assert process.returncode == 0
    assert "grace period over: abandoning the fetches still running" in stderr
    assert r.lrange("in", 0, -1) == [b"slow"]  # first in line at the next start
    assert r.llen("in/taken") == 0 and r.llen("out") == 0 and r.llen("in/failed") == 0


def hanging_fetch_config(redis_url: str, web: ScriptedService, **watcher: object) -> dict:
    """`fast...` events go to `out` at once; `hang` fetches from a service that answers
    after 60 s."""
    web.answer("/hang", {"v": "never"}, delay_s=60)
    rules = [
        {"on": "^fast", "make": {"queue": "out"}},
        {
            "on": "^hang$",
            "fetch": [{"url": web.url + "/hang", "returns": "s"}],
            "make": {"task": "${s.v}", "queue": "out"},
        },
    ]
    return make_config(redis_url, [{"input_queue": "in", "rules": rules, **watcher}])


def stop_during_the_hanging_fetch(
    r, config: dict, tmp_path: Path, web: ScriptedService
) -> tuple[float, str]:
    """Run resc on [fast0] then the batch [fast1, hang, fast2]; SIGTERM it while `hang`
    is being fetched. Returns the seconds from the signal to the exit, and stderr."""
    r.lpush("in", "fast0", "fast1", "hang", "fast2")  # the first take moves one event
    process = resc_process(str(write_config(tmp_path, config)))
    wait_until(lambda: web.paths == ["/hang"], timeout_s=20)
    wait_until(lambda: r.llen("out") >= 1)
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    return time.monotonic() - started, stderr


def test_by_default_a_stop_ends_well_inside_docker_stops_10_s(r, redis_server, tmp_path, web):
    config = hanging_fetch_config(redis_server.url, web)
    seconds, stderr = stop_during_the_hanging_fetch(r, config, tmp_path, web)
    assert 7.9 <= seconds < 9.5, seconds  # the 8 s grace period, then a prompt exit
    assert r.lrange("out", 0, -1) == [b"fast1", b"fast0"]  # what was done is committed
    assert r.lrange("in", 0, -1) == [b"fast2", b"hang"]  # the rest, first in line, in order
    assert r.llen("in/taken") == 0 and r.llen("in/failed") == 0
    assert "grace period over: abandoning the fetches still running" in stderr


def test_with_concurrency_the_grace_period_holds_and_what_is_done_is_committed(
    r, redis_server, tmp_path, web
):
    config = hanging_fetch_config(redis_server.url, web, concurrency=4)
    config["grace_period"] = 1
    seconds, _ = stop_during_the_hanging_fetch(r, config, tmp_path, web)
    assert seconds < 4, seconds
    # fast2 was done while hang was in flight: committed without waiting for it.
    assert r.lrange("out", 0, -1) == [b"fast2", b"fast1", b"fast0"]
    assert r.lrange("in", 0, -1) == [b"hang"]
    assert r.llen("in/taken") == 0 and r.llen("in/failed") == 0


def test_a_crashed_watcher_stops_resc_with_status_1(r, redis_server, tmp_path, monkeypatch):
    def crash(self: Watcher) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Watcher, "_pump", crash)
    config = make_config(
        redis_server.url, [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "out"}}]}]
    )
    path = write_config(tmp_path, config)
    daemon = Daemon(config_from_source(read_source(path)), grace_period_s=5)
    daemon.start()
    assert daemon.wait() == 1
    assert daemon.failed == ["in"]


def test_a_reload_switches_rules_for_the_events_taken_after_it(r, redis_server, tmp_path, web):
    web.answer("/slow", {"v": "fetched"}, delay_s=1.0)

    def config(prefix: str) -> dict[str, object]:
        rules = [
            {
                "on": "^slow$",
                "fetch": [{"url": web.url + "/slow", "returns": "s"}],
                "make": {"task": prefix + "${s.v}", "queue": "out"},
            },
            {"on": "^e", "make": {"task": prefix + "${input_task}", "queue": "out"}},
        ]
        return make_config(redis_server.url, [{"input_queue": "in", "rules": rules}])

    path = write_config(tmp_path, config("old/"))
    r.lpush("in", "e0", "slow", "e1")  # one at a time: concurrency 1
    daemon = Daemon(config_from_source(read_source(path)), path)
    daemon.start()
    try:
        wait_until(lambda: web.paths == ["/slow"])
        write_config(tmp_path, config("new/"))
        assert daemon.reload() is True  # while slow is in flight, and e1 not taken
        wait_until(lambda: r.llen("out") == 3)
        r.lpush("in", "e2")
        wait_until(lambda: r.llen("out") == 4)
    finally:
        daemon.stop.set()
        assert daemon.wait() == 0
    assert r.lrange("out", 0, -1)[::-1] == [b"old/e0", b"old/fetched", b"new/e1", b"new/e2"]


def test_a_stop_ends_in_time_even_when_redis_stops_answering(tmp_path: Path, web):
    web.answer("/slow", {"v": "late"}, delay_s=1.0)
    server = RedisServer(tmp_path)
    server.start()
    config = slow_fetch_config(server.url, web)
    config["grace_period"] = 0.5
    process = resc_process(str(write_config(tmp_path, config)))
    client = server.client()
    try:
        client.lpush("in", "slow")
        wait_until(lambda: web.paths == ["/slow"])
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)  # commits now wait for 11 s
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
        seconds = time.monotonic() - started
    finally:
        if server.process is not None:
            server.process.send_signal(signal.SIGCONT)
    assert process.returncode == 0
    assert seconds < 4, seconds  # the grace period, one more second, and out
    assert "grace period over: unfinished events stay in their taken list" in stderr
    # In the taken list for another instance, once its heartbeat expires; or back in the
    # input queue, when Redis ran the last command sent (putting it back) once resumed.
    assert in_hand(client) + client.lrange("in", 0, -1) == [b"slow"]
    client.close()
    server.kill()
