"""The example worker, run as a user runs it, against resc on the example config."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import drained, resc_process, wait_until

ROOT = Path(__file__).resolve().parent.parent


def test_raw_worker_takes_tasks_and_notifies_done(r, redis_server, tmp_path: Path):
    config = tmp_path / "example.hjson"
    text = (ROOT / "configs" / "example.hjson").read_text()
    config.write_text(text.replace("redis://127.0.0.1:6379/", redis_server.url))
    pubsub = r.pubsub()
    pubsub.subscribe("events")  # the example's listener channel
    daemon = resc_process(str(config))
    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "examples/workers/raw_worker.py"), redis_server.url, "plantA"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        r.lpush("global/events", *(f"acq/plantA/{i}" for i in range(5)))
        done = set()

        def all_done_notices_seen() -> bool:
            while (m := pubsub.get_message(timeout=0.05)) is not None:
                if m["type"] == "message" and m["data"].startswith(b"global/taken DONE trt/"):
                    done.add(m["data"].rsplit(b" ", 1)[1])
            return len(done) == 5

        wait_until(all_done_notices_seen)
    finally:
        worker.send_signal(signal.SIGINT)
        out, _ = worker.communicate(timeout=10)
        daemon.send_signal(signal.SIGTERM)
        daemon.communicate(timeout=20)
    pubsub.close()
    assert sorted(out.splitlines()) == [f"working on trt/plantA/{i}" for i in range(5)]
    assert done == {f"trt/plantA/{i}".encode() for i in range(5)}
    assert drained(r, "global/events", "global/taken", "trt/plantA/todo-queue", "trt/plantA/taken")
    assert r.zcard("trt/plantA/todo-set") == 0
