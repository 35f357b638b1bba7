"""`resc demo`: the whole system in one command, with nothing to install."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import IO

from resc.config.load import load_config
from resc.config.models import Config
from resc.dev.demo import CONFIG
from tests.conftest import resc_process, run_resc, wait_until

ROOT = Path(__file__).resolve().parent.parent


def without_redis(config: Config) -> dict:
    return config.model_dump(exclude={"redis"})


def test_demo_with_5_events_says_5_events_5_tasks_5_done_and_exits_0():
    done = run_resc("demo", "--events", "5", timeout_s=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    summary = next(line for line in lines if line.startswith("Summary:"))
    assert summary.startswith("Summary: 5 events, 5 tasks, 5 done in ")
    assert lines[-1] == (
        "  events pushed twice: 1, deduplicated (no new task): 1; done events back through resc: 5"
    )
    assert sum("worker-" in line and " takes trt/plantA/" in line for line in lines) == 5
    assert done.stderr == ""


def test_demo_with_1_event_says_it_in_the_singular():
    done = run_resc("demo", "--events", "1", timeout_s=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    summary = next(line for line in lines if line.startswith("Summary:"))
    assert summary.startswith("Summary: 1 event, 1 task, 1 done in ")
    assert any(line.startswith("1 event is pushed to global/events;") for line in lines)


def read_in_background(pipe: IO[str]) -> tuple[list[str], threading.Thread]:
    """The lines read so far from `pipe`, collected by a thread until its end."""
    lines: list[str] = []

    def collect() -> None:
        for line in pipe:
            lines.append(line)

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    return lines, reader


def test_demo_stops_on_ctrl_c_with_a_summary(tmp_path: Path):
    demo = resc_process("demo", "--events", "1000")
    assert demo.stdout is not None and demo.stderr is not None
    try:
        out_lines, out_reader = read_in_background(demo.stdout)
        err_lines, err_reader = read_in_background(demo.stderr)
        wait_until(lambda: any("takes trt/plantA/" in line for line in out_lines))
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=20)
        out_reader.join(10)
        err_reader.join(10)
    finally:
        demo.kill()
    out, err = "".join(out_lines), "".join(err_lines)
    assert demo.returncode == 0, err
    assert " done in " in out and out.splitlines()[-2].endswith("(stopped early)")


def test_a_second_ctrl_c_exits_at_once_and_leaves_no_temporary_directory(tmp_path: Path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    demo = resc_process("demo", "--events", "1000", env={"TMPDIR": str(tmp)})
    assert demo.stdout is not None
    try:
        out_lines, out_reader = read_in_background(demo.stdout)
        wait_until(lambda: any("takes trt/plantA/" in line for line in out_lines))
        assert [p.name[:11] for p in tmp.iterdir()] == ["resc-redis-"]
        demo.send_signal(signal.SIGINT)
        demo.send_signal(signal.SIGTERM)  # a second signal: two SIGINTs may merge in one
        demo.wait(timeout=20)
        out_reader.join(10)
    finally:
        demo.kill()
    assert demo.returncode == 130
    assert list(tmp.iterdir()) == []


def test_demo_events_must_be_at_least_1():
    done = run_resc("demo", "--events", "0")
    assert done.returncode == 2
    assert "argument --events: must be at least 1, not 0" in done.stderr


def test_the_demo_runs_the_example_config(tmp_path: Path):
    demo_config = tmp_path / "demo.hjson"
    demo_config.write_text(CONFIG % {"url": "redis://127.0.0.1:6379/"})
    example = load_config(ROOT / "configs" / "example.hjson")
    assert without_redis(load_config(demo_config)) == without_redis(example)
