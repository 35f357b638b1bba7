"""RESC_REDIS_URL: the Redis URL from the environment (a container's, a Secret's), which
overrides the config's redis.url or stands in for it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from resc.config.load import config_from_source, load_config
from resc.config.source import read_source
from resc.core.errors import ConfigError
from tests.conftest import RedisServer, run_resc, running, wait_until

WATCHERS = [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "out"}}]}]


def _write(tmp_path: Path, config: dict[str, object]) -> Path:
    path = tmp_path / "conf.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def test_the_variable_overrides_the_config(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("RESC_REDIS_URL", redis_server.url)
    # Port 1: nothing listens there; only the variable's server can make the task.
    config = {"redis": {"url": "redis://127.0.0.1:1/0"}, "watchers": WATCHERS}
    assert load_config(_write(tmp_path, config)).redis.url == redis_server.url
    with running(config, tmp_path):
        r.lpush("in", "e")
        wait_until(lambda: r.llen("out") == 1)


def test_with_the_variable_the_config_may_leave_redis_out(tmp_path: Path):
    path = _write(tmp_path, {"watchers": WATCHERS})
    source = read_source(path)
    url = "redis+sentinel://s1:26379,s2:26379/mym/0"
    assert config_from_source(source, {"RESC_REDIS_URL": url}).redis.url == url
    with pytest.raises(ConfigError) as info:
        config_from_source(source, {})
    assert info.value.problems == [
        f"{path}:1: redis: required field is missing (or set RESC_REDIS_URL)"
    ]


def test_an_empty_variable_is_no_override(tmp_path: Path):
    config = {"redis": {"url": "redis://db:6379/0"}, "watchers": WATCHERS}
    source = read_source(_write(tmp_path, config))
    assert config_from_source(source, {"RESC_REDIS_URL": ""}).redis.url == "redis://db:6379/0"


def test_a_bad_variable_is_a_config_error_naming_it_and_not_its_value(tmp_path: Path):
    path = _write(tmp_path, {"redis": {"url": "redis://db:6379/0"}, "watchers": WATCHERS})
    done = run_resc(
        "check", str(path), env={"RESC_REDIS_URL": "redis+sentinel://:hunter2@s1:26379"}
    )
    assert done.returncode == 2
    assert done.stdout.splitlines()[0] == (
        "error: RESC_REDIS_URL (the environment variable that overrides redis.url): names no "
        "master: redis+sentinel://host:26379[,host:port...]/MASTER_NAME[/DB]"
    )
    assert "hunter2" not in done.stdout + done.stderr
