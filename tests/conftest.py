"""Fixtures: a real Redis server and a real HTTP server, started by the tests on free
loopback ports, and helpers to run resc against them."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from resc.config.load import config_from_source
from resc.config.models import Config
from resc.config.source import read_source
from resc.dev.embedded import EmbeddedRedis, port_is_free
from resc.engine.daemon import Daemon
from tests import servers
from tests.webservice import ScriptedService, scripted_service


class RedisServer(EmbeddedRedis):
    """A private Redis server for a test, of the kind RESC_TEST_SERVER names (see
    tests/servers.py)."""

    def __init__(self, tmp: Path, *args: str, password: str | None = None) -> None:
        servers.check_the_test_may_start_a_server()
        binary = servers.chosen().binary
        super().__init__(*args, password=password, directory=tmp, binary=binary)
        self.port = _own_port()
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"


# Test processes run side by side (pytest -n 2): each takes its servers' ports from a
# range of its own, below the kernel's ephemeral ports, so that a server a test restarts
# on its port cannot lose that port to another process's server meanwhile.
_PORTS_PER_PROCESS = 4_000
_ports_given: list[int] = []


def _own_port() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    low = 12_000 + _PORTS_PER_PROCESS * (int(worker) if worker.isdigit() else 0) % 16_000
    for _ in range(_PORTS_PER_PROCESS):
        port = low + (len(_ports_given) * 7 + 1) % _PORTS_PER_PROCESS
        _ports_given.append(port)
        if port_is_free(port):
            return port
    raise RuntimeError("no free port left in this test process's range")


def pytest_configure(config: pytest.Config) -> None:
    try:
        servers.chosen()
    except servers.ServerChoiceError as e:
        raise pytest.UsageError(str(e)) from None


def pytest_report_header(config: pytest.Config) -> str:
    return f"test server ({servers.ENV}): {servers.chosen().describe()}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if servers.needs_a_server(item):
            item.add_marker(pytest.mark.server)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[object]:
    servers.current_item = item
    try:
        return (yield)
    finally:
        servers.current_item = None


# The resc processes started by the body of the test running (resc_process), kept on its
# item (tests.servers.current_item: this module is imported twice, as the plugin
# `conftest` and as `tests.conftest`, so a global of its own would be two): those still
# running when the body ends, because it failed before it could stop them, are killed
# then, so that none outlives its test (and takes the events of a later test's server
# on the same port). Processes that fixtures start are theirs to stop.
_STARTED = "resc_processes_of_its_body"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[object]:
    started: list[subprocess.Popen[str]] = []
    setattr(item, _STARTED, started)
    try:
        return (yield)
    finally:
        delattr(item, _STARTED)
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture(scope="session", autouse=True)
def _temporary_files_under_pytest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The temporary files of resc, in the tests and in the resc processes they start,
    under pytest's own directory: a process killed mid-test (an embedded server's
    directory, say) leaves nothing in the system's temporary directory."""
    tmp = str(tmp_path_factory.mktemp("tmp"))
    saved = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = tempfile.tempdir = tmp
    yield
    if saved[0] is None:
        del os.environ["TMPDIR"]
    else:
        os.environ["TMPDIR"] = saved[0]
    tempfile.tempdir = saved[1]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def r(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the shared test server, with an empty database."""
    client = redis.Redis(port=redis_server.port)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def restartable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private Redis server for one test, which the test may stop() or kill() and
    start() again on the same port: it keeps its data across restarts (AOF, written to
    disk at every write)."""
    folder = tmp_path / "restartable-redis"
    folder.mkdir()
    server = RedisServer(folder, "--appendonly", "yes", "--appendfsync", "always")
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Three masters of a Redis Cluster (tests/cluster.py), shared by the tests."""
    from tests.cluster import ClusterTopology

    topology = ClusterTopology(tmp_path_factory.mktemp("cluster"))
    topology.start()
    yield topology
    topology.close()


@pytest.fixture
def cluster(redis_cluster: Any) -> Any:
    """The shared cluster, every master emptied."""
    for node in redis_cluster.masters:
        with node.plain() as client:
            client.flushall()
    return redis_cluster


@pytest.fixture
def cluster_with_replicas(tmp_path: Path) -> Iterator[Any]:
    """A cluster of its own for one test: three masters with a replica each, which the
    test may kill (ClusterTopology.kill_master)."""
    from tests.cluster import ClusterTopology

    topology = ClusterTopology(tmp_path / "cluster", replicas=True)
    topology.start()
    yield topology
    topology.close()


def wait_until(predicate: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(0.01)


def write_config(tmp_path: Path, config: dict[str, Any], name: str = "conf.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(config, indent=2))
    return path


def make_config(redis_url: str, watchers: list[dict[str, Any]], **top: Any) -> dict[str, Any]:
    return {"redis": {"url": redis_url}, "watchers": watchers, **top}


@contextlib.contextmanager
def running(config: dict[str, Any], tmp_path: Path) -> Iterator[Daemon]:
    """resc's daemon running in this process on `config`, stopped on exit."""
    loaded: Config = config_from_source(read_source(write_config(tmp_path, config)))
    daemon = Daemon(loaded, grace_period_s=5)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop.set()
        assert daemon.wait() == 0


def in_hand(r: redis.Redis, taken_queue: str = "in/taken") -> list[bytes]:
    """The events in the hands of a watcher's instances (oldest of each list first), and
    those in its plain taken queue (an older resc's)."""
    lists = [taken_queue] + [
        f"{taken_queue}/{i.decode()}" for i in sorted(r.smembers(f"{taken_queue}/instances"))
    ]
    return [event for name in lists for event in r.lrange(name, 0, -1)[::-1]]


def drained(r: redis.Redis, *queues: str) -> bool:
    """True when every named list is empty; for a taken queue, also the taken lists of
    the watcher's instances."""
    return all(r.llen(q) == 0 and not in_hand(r, q) for q in queues)


def resc_process(
    *args: str, env: dict[str, str] | None = None, **kwargs: Any
) -> subprocess.Popen[str]:
    """resc's command line in a child process, as a user runs it."""
    full_env = {**os.environ, **(env or {})}
    pipes: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    process = subprocess.Popen(
        [sys.executable, "-m", "resc", *args],
        env=full_env,
        text=True,
        **{**pipes, **kwargs},
    )
    started = getattr(servers.current_item, _STARTED, None)
    if started is not None:
        started.append(process)
    return process


# The log level under which a resc_process logs "resc started" (see until_started), and
# only warnings from the rest.
STARTED_LOG = {"RESC_LOG": "warn,resc.daemon=info"}


def until_started(process: subprocess.Popen[str]) -> str:
    """What resc (a resc_process run with env=STARTED_LOG) logged until "resc started":
    its watchers run, and a SIGTERM is handled. Sent earlier, during start-up, it finds
    no handler yet and ends the process by the signal."""
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if "resc started" in line:
            return "".join(seen)
    raise AssertionError("resc exited before it started:\n" + "".join(seen))


def run_resc(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 30
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "resc", *args],
        env=full_env,
        text=True,
        capture_output=True,
        timeout=timeout_s,
    )


# --- a real HTTP server for fetch rules -----------------------------------------------


@pytest.fixture
def web() -> Iterator[ScriptedService]:
    with scripted_service() as service:
        yield service
