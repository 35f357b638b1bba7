"""`resc run --http`: the API answered from a process of its own (http.api_process), the
daemon's paths passed on to the daemon, and the two processes' lives tied together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis

from resc.server.app import UNKNOWN_PATH
from tests.conftest import RedisServer, make_config, resc_process, wait_until, write_config
from tests.test_http_api import free_port

pytestmark = pytest.mark.server

WATCHERS = [
    {
        "input_queue": "in/events",
        "taken_queue": "in/taken",
        "failed_queue": "in/failed",
        "rules": [
            {"name": "all", "on": "^(?P<x>.+)$", "make": [{"queue": "todo/q", "task": "${x}"}]}
        ],
    }
]
EVENTS = "/v1/queues/" + quote("in/events", safe="") + "/events"


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The name in parentheses may hold spaces; the parent's pid is 2nd after it.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Daemon:
    def __init__(self, server: RedisServer, tmp_path: Path, **http: Any) -> None:
        self.port = free_port()
        config = make_config(
            server.url, WATCHERS, http={"listen": f"127.0.0.1:{self.port}", **http}
        )
        # A session of its own: a signal to its group is what a terminal's Ctrl-C sends.
        self.process = resc_process(
            "run", str(write_config(tmp_path, config)), start_new_session=True
        )
        self.base = f"http://127.0.0.1:{self.port}"
        wait_until(self.ready, 30)

    def ready(self) -> bool:
        try:
            return httpx.get(self.base + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def api_pid(self) -> int:
        (child,) = wait_until(lambda: [p for p in children_of(self.process.pid) if alive(p)], 10)
        return child

    def produce(self, event: str) -> httpx.Response:
        return httpx.post(self.base + EVENTS, content=event, timeout=5)

    def stop(self, signum: int = signal.SIGTERM, group: bool = False) -> tuple[int, str]:
        if group:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)
        _, err = self.process.communicate(timeout=30)
        return self.process.returncode, err


@pytest.fixture
def daemon(r: redis.Redis, redis_server: RedisServer, tmp_path: Path):
    started = Daemon(redis_server, tmp_path)
    yield started
    if started.process.poll() is None:
        started.process.kill()
        started.process.communicate()


def test_the_api_answers_from_its_own_process_and_the_daemon_answers_the_rest(
    daemon: Daemon, r: redis.Redis
):
    api = daemon.api_pid()
    assert api != daemon.process.pid
    assert "resc.server.api_process" in Path(f"/proc/{api}/cmdline").read_text()
    for i in range(3):
        answer = daemon.produce(f"e{i}")
        assert answer.status_code == 202, answer.text
        assert answer.json() == {"queued": 1}
    wait_until(lambda: r.llen("todo/q") == 3)
    assert sorted(r.lrange("todo/q", 0, -1)) == [b"e0", b"e1", b"e2"]
    # The daemon's own paths: its watchers' counts are in its metrics only.
    metrics = httpx.get(daemon.base + "/metrics").text
    assert 'resc_events_taken_total{watcher="in/events"} 3.0' in metrics
    assert httpx.get(daemon.base + "/livez").text == "ok\n"
    ready = httpx.get(daemon.base + "/readyz")
    assert (ready.status_code, ready.json()) == (200, {"ready": True, "not_ready": {}})
    unknown = httpx.get(daemon.base + "/nowhere?x=1")
    assert (unknown.status_code, unknown.text) == (404, UNKNOWN_PATH)
    schema = httpx.get(daemon.base + "/openapi.json").json()
    assert "/v1/queues/{queue}/events" in schema["paths"]
    assert "/readyz" in schema["paths"]
    assert httpx.get(daemon.base + "/docs").status_code == 200


def test_a_body_too_large_for_the_daemon_s_paths_is_refused(daemon: Daemon):
    answer = httpx.post(daemon.base + "/readyz", content=b"x" * (2 * 1024 * 1024))
    assert answer.status_code == 413
    assert answer.json() == {"error": "request body too large"}


def test_a_killed_api_process_is_started_again_and_nothing_acknowledged_is_lost(
    daemon: Daemon, r: redis.Redis
):
    first = daemon.api_pid()
    acknowledged: list[str] = []
    sent: list[str] = []
    stop = threading.Event()

    def produce() -> None:
        with httpx.Client(timeout=5) as client:
            i = 0
            while not stop.is_set():
                event = f"p{i}"
                i += 1
                sent.append(event)
                try:
                    if client.post(daemon.base + EVENTS, content=event).status_code == 202:
                        acknowledged.append(event)
                except httpx.HTTPError:
                    time.sleep(0.05)  # not sent again: an event is posted once

    producer = threading.Thread(target=produce)
    producer.start()
    wait_until(lambda: len(acknowledged) >= 50)
    os.kill(first, signal.SIGKILL)
    second = wait_until(lambda: [p for p in children_of(daemon.process.pid) if p != first], 10)
    count = len(acknowledged)
    wait_until(lambda: len(acknowledged) >= count + 50, 20)
    stop.set()
    producer.join()
    assert second != [first]
    wait_until(lambda: r.llen("in/events") == 0 and r.llen("todo/q") >= len(acknowledged))
    time.sleep(0.3)
    tasks = [t.decode() for t in r.lrange("todo/q", 0, -1)]
    assert len(tasks) == len(set(tasks))  # none twice
    assert set(acknowledged) <= set(tasks)  # every 202 kept
    assert set(tasks) <= set(sent)
    status, err = daemon.stop()
    assert status == 0
    assert "the HTTP API process ended: starting it again status=-9" in err


def test_the_api_process_ends_when_the_daemon_is_killed(daemon: Daemon):
    api = daemon.api_pid()
    daemon.process.kill()
    daemon.process.communicate()
    wait_until(lambda: not alive(api), 10)
    with pytest.raises(httpx.ConnectError):
        httpx.get(daemon.base + "/livez", timeout=2)


@pytest.mark.parametrize(("signum", "group"), [(signal.SIGTERM, False), (signal.SIGINT, True)])
def test_a_stop_ends_both_processes(daemon: Daemon, signum: int, group: bool):
    """SIGTERM to the daemon (docker stop), or SIGINT to its whole process group (a
    terminal's Ctrl-C): the daemon stops the API process itself."""
    api = daemon.api_pid()
    status, err = daemon.stop(signum, group)
    assert status == 0, err
    assert not alive(api)
    assert "Traceback" not in err


def test_api_process_false_serves_the_api_in_the_daemon(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
):
    daemon = Daemon(redis_server, tmp_path, api_process=False)
    try:
        assert daemon.produce("one").status_code == 202
        assert children_of(daemon.process.pid) == []
        wait_until(lambda: r.llen("todo/q") == 1)
    finally:
        assert daemon.stop()[0] == 0


def test_the_redis_password_is_not_on_the_api_process_command_line_or_environment(
    tmp_path: Path,
):
    secret = "s3cret-Pa55word"
    with RedisServer(tmp_path, password=secret) as server:
        daemon = Daemon(server, tmp_path)
        try:
            api = daemon.api_pid()
            assert daemon.produce("one").status_code == 202
            for name in ("cmdline", "environ"):
                assert secret.encode() not in Path(f"/proc/{api}/{name}").read_bytes()
            status, err = daemon.stop()
        finally:
            if daemon.process.poll() is None:
                daemon.process.kill()
        assert status == 0
        assert secret not in err


def test_a_missing_token_stops_resc_at_start(redis_server: RedisServer, tmp_path: Path):
    port = free_port()
    config = make_config(
        redis_server.url,
        WATCHERS,
        http={"listen": f"127.0.0.1:{port}", "tokens": {"produce": "RESC_TEST_NO_TOKEN"}},
    )
    env = {k: v for k, v in os.environ.items() if k != "RESC_TEST_NO_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-m", "resc", "run", str(write_config(tmp_path, config))],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert done.returncode == 1
    assert "http.tokens.produce: the environment variable RESC_TEST_NO_TOKEN is not set" in (
        done.stderr
    )


def test_an_api_process_that_keeps_ending_is_started_again_less_and_less_often(
    daemon: Daemon,
):
    first = daemon.api_pid()
    os.kill(first, signal.SIGKILL)
    (second,) = wait_until(
        lambda: [p for p in children_of(daemon.process.pid) if p != first and alive(p)], 10
    )
    os.kill(second, signal.SIGKILL)
    wait_until(lambda: [p for p in children_of(daemon.process.pid) if p not in (first, second)], 10)
    assert daemon.produce("after").status_code == 202
    status, err = daemon.stop()
    assert status == 0
    assert "starting it again status=-9 delay_s=1.0" in err
    assert "starting it again status=-9 delay_s=2.0" in err
