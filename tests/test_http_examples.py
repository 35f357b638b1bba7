"""The HTTP API's examples, run as a user runs them: the curl commands of the README's
"HTTP API" section, verbatim, and examples/workers/curl_worker.sh, against `resc run`."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from resc.dev.embedded import free_port
from tests.conftest import RedisServer, make_config, resc_process, wait_until, write_config

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "examples" / "workers" / "curl_worker.sh"
QUEUE = "trt/plantA/todo-queue"
RULES = [
    {
        "input_queue": "global/events",
        "rules": [
            {
                "on": r"^acq/(?P<p>\w+)/(?P<n>\d+)$",
                "make": {
                    "task": "trt/${p}/${n}",
                    "queue": "trt/${p}/todo-queue",
                    "set": "trt/${p}/todo-set",
                },
            }
        ],
    }
]


@pytest.fixture
def resc(r: redis.Redis, redis_server: RedisServer, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    http = {"listen": f"127.0.0.1:{port}", "consume": [QUEUE], "done_queue": "done"}
    config = make_config(redis_server.url, RULES, http=http)
    process = resc_process("run", str(write_config(tmp_path, config)))
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(base + "/readyz").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, timeout_s=20)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## HTTP API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def run_sh(script: str, **env: str) -> str:
    done = subprocess.run(
        ["sh", "-ec", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_readme_curl_commands_produce_claim_and_finish(r: redis.Redis, resc: str):
    produce, done = readme_commands()
    out = run_sh(produce, RESC=resc, PATH="/usr/bin:/bin")
    queued = '{"queued":1}{"queued":2}'
    assert out.startswith(queued)
    promise = json.loads(out.removeprefix(queued))
    assert promise["task"] == "trt/plantA/1"
    assert promise["attempt"] == 1
    assert r.zscore("trt/plantA/todo-set", "trt/plantA/1") is None  # zrem before
    assert run_sh(done, RESC=resc, ID=promise["id"], PATH="/usr/bin:/bin") == (
        f'{{"id":"{promise["id"]}","outcome":"done"}}'
    )
    assert r.lrange("done", 0, -1) == [b"trt/plantA/1"]
    assert r.llen(QUEUE) == 2


def test_the_curl_worker_does_every_task_once(r: redis.Redis, resc: str):
    worker = subprocess.Popen(
        ["sh", str(WORKER), resc, QUEUE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        events = [f"acq/plantA/{n}" for n in range(5)]
        assert httpx.post(f"{resc}/v1/queues/global/events/events", json=events).status_code == 202
        wait_until(lambda: r.llen("done") == 5, timeout_s=30)
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=20)
    assert worker.returncode == 0, err
    tasks = sorted(f"trt/plantA/{n}" for n in range(5))
    assert sorted(out.splitlines()) == [f"working on {t}" for t in tasks]
    assert sorted(r.lrange("done", 0, -1)) == [t.encode() for t in tasks]
    assert r.hlen(f"{QUEUE}/claims") == 0
    assert r.zcard("trt/plantA/todo-set") == 0
