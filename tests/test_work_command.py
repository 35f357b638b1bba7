"""`resc work`: a worker with no code, run as a user runs it, against a real Redis."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import resc_process, run_resc, wait_until
from tests.test_worker import failed_reasons

QUEUE = "trt/plantA/todo-queue"
MATCH = r"^trt/(?P<process_id>\w+)/(?P<product_id>\w+)$"


def work(redis_server, *options: str) -> subprocess.Popen[str]:
    return resc_process("work", "--redis", redis_server.url, "--queue", QUEUE, *options)


def stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    """SIGTERM, then the exit status and the log (stderr)."""
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=15)
    finally:
        process.kill()
    return process.returncode, err


def test_the_command_gets_the_task_and_named_parts_in_args_and_environment(
    r, redis_server, tmp_path: Path
):
    out = tmp_path / "out"
    script = f'echo "$RESC_TASK {{product_id}} $RESC_PROCESS_ID" >> {out}; echo "made {{task}}"'
    worker = work(
        redis_server, "--set", "trt/plantA/todo-set", "--match", MATCH, "--", "sh", "-c", script
    )
    r.zadd("trt/plantA/todo-set", {"trt/plantA/1": 1, "trt/plantA/2": 1})
    r.lpush(QUEUE, "trt/plantA/1", "trt/plantA/2")
    wait_until(lambda: r.llen("global/events") == 2)
    status, log = stop(worker)
    assert status == 0, log
    assert out.read_text().splitlines() == ["trt/plantA/1 1 plantA", "trt/plantA/2 2 plantA"]
    assert r.lrange("global/events", 0, -1) == [b"trt/plantA/2", b"trt/plantA/1"]
    assert r.zcard("trt/plantA/todo-set") == 0
    assert "[INFO] - made trt/plantA/1 " in log
    assert "stream=stdout" in log


def test_a_failing_command_is_retried_then_failed_with_its_status_and_last_error_line(
    r, redis_server, tmp_path: Path
):
    attempts = tmp_path / "attempts"
    script = f'echo x >> {attempts}; echo "looking it up" >&2; echo "no such product" >&2; exit 3'
    worker = work(redis_server, "--retries", "1", "--retry-delay", "0.05", "--", "sh", "-c", script)
    r.lpush(QUEUE, "trt/plantA/1")
    wait_until(lambda: r.llen(f"{QUEUE}/failed") == 1)
    status, log = stop(worker)
    assert status == 0, log
    assert attempts.read_text() == "x\nx\n"
    assert failed_reasons(r, f"{QUEUE}/failed") == {
        b"trt/plantA/1": [("the command exited with status 3: no such product", 2)]
    }
    assert r.llen("global/events") == 0


def is_running(pid: int) -> bool:
    """False once the process has exited, even while it waits to be reaped (a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_command_past_its_timeout_is_killed_with_what_it_started(r, redis_server, tmp_path: Path):
    pid_file = tmp_path / "pid"
    script = f"sleep 60 & echo $! > {pid_file}; wait"
    worker = work(redis_server, "--timeout", "0.5", "--retries", "0", "--", "sh", "-c", script)
    r.lpush(QUEUE, "trt/plantA/1")
    wait_until(lambda: r.llen(f"{QUEUE}/failed") == 1)
    status, log = stop(worker)
    assert status == 0, log
    assert failed_reasons(r, f"{QUEUE}/failed") == {
        b"trt/plantA/1": [("the command ran past its timeout of 0.5 s and was killed", 1)]
    }
    assert not is_running(int(pid_file.read_text()))


def test_a_task_that_does_not_match_fails_without_running_the_command(
    r, redis_server, tmp_path: Path
):
    marker = tmp_path / "ran"
    worker = work(redis_server, "--match", MATCH, "--", "touch", str(marker))
    r.lpush(QUEUE, "not/a/task/of/this/shape")
    wait_until(lambda: r.llen(f"{QUEUE}/failed") == 1)
    status, log = stop(worker)
    assert status == 0, log
    assert not marker.exists()
    assert failed_reasons(r, f"{QUEUE}/failed") == {
        b"not/a/task/of/this/shape": [(f"the task does not match --match {MATCH}", 1)]
    }


def test_commands_run_concurrently(r, redis_server, tmp_path: Path):
    # Each command waits until all three have started: only concurrent ones finish in time.
    started = tmp_path / "started"
    started.mkdir()
    script = (
        f'touch {started}/"$RESC_TASK"; '
        f'until [ "$(ls {started} | wc -l)" -ge 3 ]; do sleep 0.05; done'
    )
    worker = work(redis_server, "--concurrency", "3", "--timeout", "5", "--", "sh", "-c", script)
    r.lpush(QUEUE, "a", "b", "c")
    wait_until(lambda: r.llen("global/events") == 3)
    status, log = stop(worker)
    assert status == 0, log
    assert r.llen(f"{QUEUE}/failed") == 0


def test_sigterm_lets_the_running_command_finish_and_notifies_it(r, redis_server, tmp_path: Path):
    started, finished = tmp_path / "started", tmp_path / "finished"
    script = f"touch {started}; sleep 0.5; touch {finished}"
    worker = work(redis_server, "--", "sh", "-c", script)
    r.lpush(QUEUE, "t")
    wait_until(started.exists)
    status, log = stop(worker)
    assert status == 0, log
    assert finished.exists()
    assert r.lrange("global/events", 0, -1) == [b"t"]


def wait_for_line(process: subprocess.Popen[str], text: str) -> list[str]:
    """The log lines up to the first that holds `text` (read from stderr as they come)."""
    assert process.stderr is not None
    lines: list[str] = []
    for line in process.stderr:
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"{text!r} never logged: {''.join(lines)}")


def killing_left_commands(pid_file: Path) -> contextlib.AbstractContextManager[None]:
    @contextlib.contextmanager
    def cleanup() -> Iterator[None]:
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
                left = int(pid_file.read_text())
                if is_running(left):  # in its own process group, named by its pid
                    os.killpg(left, signal.SIGKILL)

    return cleanup()


@pytest.mark.parametrize("first", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_second_signal_gives_the_task_back_kills_the_command_and_exits_130(
    r, redis_server, tmp_path: Path, first: signal.Signals
):
    pid_file = tmp_path / "pid"
    worker = work(
        redis_server,
        "--worker-id",
        "w",
        "--set",
        "trt/plantA/todo-set",
        "--",
        "sh",
        "-c",
        f"echo $$ > {pid_file}; exec sleep 60",
    )
    r.zadd("trt/plantA/todo-set", {"t": 1})
    r.lpush(QUEUE, "t")
    with killing_left_commands(pid_file):
        try:
            wait_until(lambda: pid_file.exists() and pid_file.read_text().strip())
            command_pid = int(pid_file.read_text())
            worker.send_signal(first)
            log = wait_for_line(worker, "stopping after the tasks in hand")
            assert f"signal={first.name}" in log[-1]
            time.sleep(0.6)  # past the time within which a second signal is the same stop
            worker.send_signal(signal.SIGTERM)
            _, err = worker.communicate(timeout=5)
            command_killed = not is_running(command_pid)
        finally:
            worker.kill()
    assert worker.returncode == 130, err
    assert command_killed
    assert "second signal: giving the tasks in hand back and exiting" in err
    assert "retrying" not in err
    assert r.lrange(QUEUE, 0, -1) == [b"t"]
    assert r.zscore("trt/plantA/todo-set", "t") is not None
    assert r.keys(f"{QUEUE}/*") == []
    assert r.llen("global/events") == 0


def test_two_signals_a_moment_apart_are_one_stop(r, redis_server, tmp_path: Path):
    started, finished = tmp_path / "started", tmp_path / "finished"
    script = f"touch {started}; sleep 0.8; touch {finished}"
    worker = work(redis_server, "--", "sh", "-c", script)
    r.lpush(QUEUE, "t")
    try:
        wait_until(started.exists)
        worker.send_signal(signal.SIGTERM)  # as a process group's kill, or `timeout`, does
        worker.send_signal(signal.SIGINT)
        _, err = worker.communicate(timeout=10)
    finally:
        worker.kill()
    assert worker.returncode == 0, err
    assert finished.exists()
    assert r.lrange("global/events", 0, -1) == [b"t"]
    assert err.count("stopping after the tasks in hand") == 1


def test_the_command_dies_with_a_worker_killed_by_sigkill(r, redis_server, tmp_path: Path):
    pid_file = tmp_path / "pid"
    worker = work(redis_server, "--", "sh", "-c", f"echo $$ > {pid_file}; exec sleep 60")
    r.lpush(QUEUE, "t")
    with killing_left_commands(pid_file):
        try:
            wait_until(lambda: pid_file.exists() and pid_file.read_text().strip())
            command_pid = int(pid_file.read_text())
        finally:
            worker.kill()
            worker.communicate()
        wait_until(lambda: not is_running(command_pid), timeout_s=5)


def test_no_done_pushes_no_notice(r, redis_server, tmp_path: Path):
    ran = tmp_path / "ran"
    worker = work(redis_server, "--no-done", "--worker-id", "w", "--", "touch", str(ran))
    r.lpush(QUEUE, "t")
    try:
        # Out of the taken list after the command ran: finished.
        wait_until(lambda: ran.exists() and r.llen(f"{QUEUE}/taken/w") == 0)
    finally:
        status, log = stop(worker)
    assert status == 0, log
    assert r.exists("global/events") == 0
    assert r.llen(QUEUE) == 0 and r.llen(f"{QUEUE}/failed") == 0
    assert "task done" in log
    assert "done_queue" not in log


def test_zrem_after_keeps_the_task_in_the_set_while_the_command_runs(
    r, redis_server, tmp_path: Path
):
    started, release = tmp_path / "started", tmp_path / "release"
    script = f"touch {started}; until [ -e {release} ]; do sleep 0.02; done"
    worker = work(
        redis_server, "--set", "trt/plantA/todo-set", "--zrem", "after", "--", "sh", "-c", script
    )
    r.zadd("trt/plantA/todo-set", {"t": 1})
    r.lpush(QUEUE, "t")
    try:
        wait_until(started.exists)
        assert r.zscore("trt/plantA/todo-set", "t") == 1.0
        release.touch()
        wait_until(lambda: r.llen("global/events") == 1)
    finally:
        release.touch()  # the command ends, and so does the worker
        status, log = stop(worker)
    assert status == 0, log
    assert r.zcard("trt/plantA/todo-set") == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--"], "resc work: no command: put it after --, e.g. -- echo {task}"),
        (
            ["--", "echo", "{product}"],
            "resc work: {product} in the command is not a placeholder; there are: {task} "
            "(named groups of a --match regex are placeholders too)",
        ),
        (
            ["--", "no-such-program-here", "{task}"],
            "resc work: command not found: no-such-program-here",
        ),
        (["--match", "a(b", "--", "echo"], "resc work: --match a(b: invalid regex: missing ): a(b"),
        (["--concurrency", "0", "--", "echo"], "resc work: concurrency must be at least 1, not 0"),
        (
            ["--timeout", "0", "--", "echo"],
            "resc work: the timeout must be more than 0 seconds, not 0",
        ),
    ],
)
def test_usage_errors_exit_2_with_a_clear_message(options: list[str], message: str):
    done = run_resc("work", "--redis", "redis://127.0.0.1:1/0", "--queue", "q", *options)
    assert (done.returncode, done.stderr.strip()) == (2, message)


def test_a_bad_redis_url_is_a_usage_error():
    done = run_resc("work", "--redis", "http://x/", "--queue", "q", "--", "echo")
    assert (done.returncode, done.stderr.strip()) == (
        2,
        "resc work: --redis http://x/: must start with redis://, rediss://, unix://, "
        "redis+sentinel://, rediss+sentinel://, redis+cluster:// or rediss+cluster://",
    )


def test_the_log_says_when_redis_refuses_a_command(r, redis_server):
    r.set("global/events", "a string, not a queue")
    worker = work(redis_server, "--", "true")
    r.lpush(QUEUE, "t")
    try:
        _, err = worker.communicate(timeout=15)
    finally:
        worker.kill()
    assert worker.returncode == 1
    assert err.splitlines()[-1] == (
        "resc work: notifying global/events: global/events holds a string, not a list"
    )
