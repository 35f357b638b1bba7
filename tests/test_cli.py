"""resc's command line, run as a user runs it: in a child process."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

import resc
from tests.conftest import (
    RedisServer,
    make_config,
    resc_process,
    run_resc,
    wait_until,
    write_config,
)

ROOT = Path(__file__).resolve().parent.parent
LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} \[(INFO|WARN|ERROR|DEBUG)\] - ")


def test_version():
    done = run_resc("--version")
    assert (done.returncode, done.stdout.strip()) == (0, f"resc {resc.__version__}")


def test_help_names_the_run_command():
    done = run_resc("--help")
    assert done.returncode == 0
    assert "run       run the daemon on a config file" in done.stdout


def test_no_arguments_is_a_usage_error():
    done = run_resc()
    assert done.returncode == 2
    assert "usage: resc" in done.stderr


def test_a_misspelled_command_is_named_with_the_nearest_one(tmp_path):
    done = run_resc("chek", str(tmp_path / "x.hjson"))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines()[-1] == (
        "resc: error: unknown command 'chek' (did you mean 'check'?)"
    )


def test_an_unknown_command_like_no_other_lists_the_commands():
    done = run_resc("frobnicate")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines()[-1] == (
        "resc: error: unknown command 'frobnicate' (commands: run, serve, dashboard, check, "
        "explain, test, status, schema, failed, replay, work, demo)"
    )


def test_a_config_path_as_first_word_means_run(tmp_path):
    missing = tmp_path / "nope.hjson"
    done = run_resc(str(missing))
    assert done.returncode == 2
    assert done.stderr.startswith(f"resc: {missing}: cannot read: ")
    # An existing file is a config whatever its name, even in the working directory.
    (tmp_path / "conf").write_text("{}")
    done = subprocess.run(
        [sys.executable, "-m", "resc", "conf"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (done.returncode, done.stderr) == (
        2,
        "resc: conf: unknown config format '(no extension)': the file name must end in "
        ".hjson or .json\n",
    )


def test_config_error_exits_2_with_located_messages_and_no_traceback(tmp_path):
    path = tmp_path / "bad.hjson"
    path.write_text(
        "{\n"
        '  redis: { url: "redis://127.0.0.1/" }\n'
        "  watchers: [\n"
        "    {\n"
        "      input_queue: global/events\n"
        "      rules: [\n"
        "        {\n"
        "          on: ^acq/(?P<p>\\w+)$\n"
        '          make: { queue: "q/${product}" }\n'
        "        }\n"
        "      ]\n"
        "    }\n"
        "  ]\n"
        "}\n"
    )
    done = run_resc(str(path))
    assert done.returncode == 2
    assert done.stderr == (
        f"resc: {path}:9: watchers[0].rules[0].make.queue: ${{product}} is not a variable "
        f"of this rule; it has: input_task, p\n"
    )


def test_run_subcommand_and_missing_file(tmp_path):
    done = run_resc("run", str(tmp_path / "nope.hjson"))
    assert done.returncode == 2
    assert done.stderr.startswith(f"resc: {tmp_path / 'nope.hjson'}: cannot read: ")
    assert "Traceback" not in done.stderr


def test_unknown_extension_is_refused(tmp_path):
    path = tmp_path / "conf.yaml"
    path.write_text("redis: {}")
    done = run_resc(str(path))
    assert done.returncode == 2
    assert "unknown config format '.yaml': the file name must end in .hjson or .json" in done.stderr


def test_example_config_runs_with_info_logs_and_stops_on_sigterm(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
):
    text = (ROOT / "configs" / "example.hjson").read_text()
    path = tmp_path / "example.hjson"
    path.write_text(text.replace("redis://127.0.0.1:6379/", redis_server.url))
    process = resc_process(str(path), env={"RESC_LOG": "info"})
    try:
        r.lpush("global/events", "acq/plantA/1")
        wait_until(lambda: r.llen("trt/plantA/todo-queue") == 1)
        assert r.lrange("trt/plantA/todo-queue", 0, -1) == [b"trt/plantA/1"]
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0
    lines = stderr.splitlines()
    assert all(LINE.match(line) for line in lines), stderr
    assert any(
        line.endswith("[INFO] - event taken watcher=global/events input_task=acq/plantA/1")
        for line in lines
    ), stderr
    assert any(
        "[INFO] - task pushed watcher=global/events task=trt/plantA/1 "
        "queue=trt/plantA/todo-queue" in line
        for line in lines
    ), stderr
    assert lines[-1].endswith("[INFO] - resc stopped")


def test_quiet_by_default(r, redis_server, tmp_path):
    config = make_config(
        redis_server.url, [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "out"}}]}]
    )
    process = resc_process(
        str(write_config(tmp_path, config)), env={"RESC_LOG": "", "RUST_LOG": ""}
    )
    r.lpush("in", "x")
    wait_until(lambda: r.llen("out") == 1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=20)
    assert (process.returncode, stderr) == (0, "")


def test_rust_log_is_honoured_and_json_format(r, redis_server, tmp_path):
    config = make_config(
        redis_server.url,
        [{"input_queue": "in", "rules": [{"name": "all", "on": "", "make": {"queue": "out"}}]}],
    )
    process = resc_process(
        str(write_config(tmp_path, config)),
        env={"RESC_LOG": "", "RUST_LOG": "warn,resc::rules=debug", "RESC_LOG_FORMAT": "json"},
    )
    r.lpush("in", "x")
    wait_until(lambda: r.llen("out") == 1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0
    assert stderr.count("\n") == 1, stderr  # only the rules' debug line
    assert '"logger": "resc.rules"' in stderr and '"message": "rule fired"' in stderr
    assert '"rule": "all"' in stderr and '"input_task": "x"' in stderr


def test_redis_password_never_appears_in_logs(tmp_path):
    server = RedisServer(tmp_path, password="s3cret-pw")
    server.start()
    try:
        config = make_config(
            server.url, [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "out"}}]}]
        )
        process = resc_process(str(write_config(tmp_path, config)), env={"RESC_LOG": "debug"})
        client = server.client()
        client.lpush("in", "x")
        wait_until(lambda: client.llen("out") == 1)
        server.kill()  # connection errors get logged too
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    finally:
        server.kill()
    assert process.returncode == 0
    assert "Redis unavailable" in stderr
    assert "redis://:***@127.0.0.1" in stderr
    assert "s3cret-pw" not in stderr


def test_info_logs_name_the_make_and_show_huge_events_as_excerpts(r, redis_server, tmp_path):
    rule = {
        "name": "all",
        "on": "",
        "make": [{"name": "to archive", "task": "a/${input_task}", "queue": "out"}],
    }
    config = make_config(redis_server.url, [{"input_queue": "in", "rules": [rule]}])
    process = resc_process(str(write_config(tmp_path, config)), env={"RESC_LOG": "info"})
    huge = b"e" * 10_000_000
    r.lpush("in", "small", huge)
    wait_until(lambda: r.llen("out") == 2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0
    assert (
        "[INFO] - task pushed watcher=in task=a/small queue=out rule=all "
        'make="to archive"\n' in stderr
    )
    assert max(len(line) for line in stderr.splitlines()) < 500
    assert f'input_task="{"e" * 200}... (10000000 bytes, sha256 ' in stderr
    assert f'task="a/{"e" * 198}... (10000002 bytes, sha256 ' in stderr


def test_debug_tells_an_event_matched_no_rule_without_redis_py_noise(r, redis_server, tmp_path):
    config = make_config(
        redis_server.url,
        [{"input_queue": "in", "rules": [{"on": "^acq/", "make": {"queue": "o"}}]}],
    )
    process = resc_process(str(write_config(tmp_path, config)), env={"RESC_LOG": "debug"})
    r.lpush("in", "nothing")
    wait_until(lambda: r.llen("in") == 0 and r.llen("in/taken") == 0)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0
    assert "[DEBUG] - no rule matched watcher=in input_task=nothing\n" in stderr
    assert "maintenance notifications" not in stderr  # redis-py's, at its own debug level
    assert all(LINE.match(line) for line in stderr.splitlines()), stderr
