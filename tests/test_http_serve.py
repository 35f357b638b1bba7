"""`resc serve CONF`: the HTTP API without watchers, in its own process; claims kept in
Redis across a restart of it."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import redis

from resc.dev.embedded import free_port
from tests.conftest import (
    RedisServer,
    make_config,
    resc_process,
    run_resc,
    wait_until,
    write_config,
)

RULES = [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "todo"}}]}]


def _up(base: str) -> bool:
    try:
        return httpx.get(base + "/readyz").status_code == 200
    except httpx.TransportError:
        return False


def test_serve_hands_out_a_claim_that_outlives_a_restart(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = make_config(redis_server.url, RULES, http={"listen": f"127.0.0.1:{port}"})
    path = write_config(tmp_path, config)
    process = resc_process("serve", str(path))
    try:
        wait_until(lambda: _up(base))
        assert httpx.post(base + "/v1/queues/in/events", content="e1").status_code == 202
        assert r.lrange("in", 0, -1) == [b"e1"]  # no watcher took it
        r.lpush("todo", "t1")
        promise = httpx.post(base + "/v1/queues/todo/promises").json()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    process = resc_process("serve", str(path))
    try:
        wait_until(lambda: _up(base))
        answer = httpx.post(f"{base}/v1/queues/todo/promises/{promise['id']}/done")
        assert answer.status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    assert r.lrange("global/events", 0, -1) == [b"t1"]


def test_serve_needs_an_address(redis_server: RedisServer, tmp_path: Path):
    done = run_resc("serve", str(write_config(tmp_path, make_config(redis_server.url, RULES))))
    assert done.returncode == 2
    assert done.stderr == "resc: serve needs --http HOST:PORT or http.listen in the config\n"
