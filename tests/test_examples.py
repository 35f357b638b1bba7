"""Every example worker of examples/workers, run as a user runs it, against resc on the
example config: events in, tasks done, done events back in global/events."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import hjson
import pytest

from tests.conftest import drained, running, wait_until

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "workers"
EVENTS = [f"acq/plantA/{i}" for i in range(5)]
TASKS = [f"trt/plantA/{i}" for i in range(5)]


def example_config(url: str) -> dict:
    config = hjson.loads((ROOT / "configs" / "example.hjson").read_text())
    config["redis"]["url"] = url
    return config


def run_example(
    command: list[str],
    r,
    redis_server,
    tmp_path: Path,
    cwd: Path | None = None,
    stop_signal: int = signal.SIGTERM,
):
    """Runs resc and the worker, pushes five events, and waits for resc to process the five
    done events; returns the worker's stdout and its exit status after `stop_signal`."""
    pubsub = r.pubsub()
    pubsub.subscribe("events")  # the example config's listener channel
    done_back: set[bytes] = set()

    def every_done_event_processed() -> bool:
        while (m := pubsub.get_message(timeout=0.05)) is not None:
            if m["type"] == "message" and m["data"].startswith(b"global/taken DONE trt/"):
                done_back.add(m["data"].rsplit(b" ", 1)[1])
        return len(done_back) == 5

    with running(example_config(redis_server.url), tmp_path):
        worker = subprocess.Popen(
            [*command, redis_server.url, "plantA"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
        )
        try:
            r.lpush("global/events", *EVENTS)
            wait_until(every_done_event_processed, timeout_s=20)
        finally:
            worker.send_signal(stop_signal)
            out, err = worker.communicate(timeout=10)
    pubsub.close()
    assert done_back == {t.encode() for t in TASKS}
    assert drained(r, "global/events", "global/taken", "trt/plantA/todo-queue")
    assert r.zcard("trt/plantA/todo-set") == 0
    return out, worker.returncode, err


def test_library_worker(r, redis_server, tmp_path):
    out, status, err = run_example(
        [sys.executable, str(EXAMPLES / "library_worker.py")], r, redis_server, tmp_path
    )
    assert status == 0, err
    assert sorted(out.splitlines()) == [f"working on {t}" for t in TASKS]
    # Its own taken list, heartbeat and registration are gone with it.
    assert r.keys("trt/plantA/todo-queue/*") == []


def test_raw_worker(r, redis_server, tmp_path):
    # It stops on Ctrl-C only (KeyboardInterrupt).
    out, status, err = run_example(
        [sys.executable, str(EXAMPLES / "raw_worker.py")],
        r,
        redis_server,
        tmp_path,
        stop_signal=signal.SIGINT,
    )
    assert status == 0, err
    assert sorted(out.splitlines()) == [f"working on {t}" for t in TASKS]
    assert r.llen("trt/plantA/taken") == 0


def test_shell_worker(r, redis_server, tmp_path):
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is not installed")
    out, status, err = run_example(
        ["bash", str(EXAMPLES / "shell_worker.sh")], r, redis_server, tmp_path
    )
    assert status == 0, err
    assert sorted(out.splitlines()) == [f"working on {t}" for t in TASKS]
    assert r.llen("trt/plantA/taken") == 0


@pytest.fixture
def node_worker(tmp_path: Path) -> Path:
    """node_worker.js with its npm package installed beside it, in a temporary directory."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed")
    folder = tmp_path / "node"
    folder.mkdir()
    for name in ("node_worker.js", "package.json"):
        shutil.copy(EXAMPLES / name, folder / name)
    try:
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=180,
        )
    except subprocess.TimeoutExpired:
        pytest.skip("npm install of the redis package took more than 180 s")
    if done.returncode != 0:
        pytest.skip(f"npm install of the redis package failed (offline?): {done.stderr[-500:]}")
    return folder


def test_node_worker(r, redis_server, tmp_path, node_worker: Path):
    out, status, err = run_example(
        ["node", "node_worker.js"], r, redis_server, tmp_path, cwd=node_worker
    )
    assert status == 0, err
    assert sorted(out.splitlines()) == [f"working on {t}" for t in TASKS]
    assert r.llen("trt/plantA/taken") == 0
