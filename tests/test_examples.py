"""Every example worker of examples/workers, run as a user runs it, against resc on the
example config: events in, tasks done, done events back in global/events. Then the raw,
shell and Node.js workers through what they must wait out (idle, Redis restarts with and
without their data, a failover) and what they must not (a key of the wrong type), every
task counted."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import hjson
import pytest
import redis

from resc.dev.embedded import free_port
from tests.conftest import RedisServer, drained, running, wait_until

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
    out, status, err = run_example(
        ["bash", str(EXAMPLES / "shell_worker.sh")], r, redis_server, tmp_path
    )
    assert status == 0, err
    assert sorted(out.splitlines()) == [f"working on {t}" for t in TASKS]
    assert r.llen("trt/plantA/taken") == 0


@pytest.fixture(scope="session")
def node_worker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with node_worker.js and its npm package installed beside it."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node_worker.js is tested with Node.js: install node and npm")
    folder = tmp_path_factory.mktemp("node")
    for name in ("node_worker.js", "package.json"):
        shutil.copy(EXAMPLES / name, folder / name)
    done = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"npm install of the redis package failed: {done.stderr[-500:]}"
    return folder


def test_node_worker(r, redis_server, tmp_path, node_worker: Path):
    out, status, err = run_example(
        ["node", "node_worker.js"], r, redis_server, tmp_path, cwd=node_worker
    )
    assert status == 0, err
    assert sorted(out.splitlines()) == [f"working on {t}" for t in TASKS]
    assert r.llen("trt/plantA/taken") == 0


# --- idle, Redis restarts and failovers ------------------------------------------------
# The raw, shell and Node.js workers alone on a private server: tasks pushed into the
# todo queue as resc pushes them, notices read from global/events, every one counted.

QUEUE = "trt/plantA/todo-queue"
TAKEN = "trt/plantA/taken"
DONE = "global/events"


@dataclass
class Example:
    command: list[str]
    cwd: Path | None
    stop_signal: int  # the raw worker stops on Ctrl-C only (KeyboardInterrupt)


@pytest.fixture(params=["raw", "shell", "node"])
def example(request: pytest.FixtureRequest) -> Example:
    if request.param == "raw":
        return Example([sys.executable, str(EXAMPLES / "raw_worker.py")], None, signal.SIGINT)
    if request.param == "shell":
        return Example(["bash", str(EXAMPLES / "shell_worker.sh")], None, signal.SIGTERM)
    return Example(
        ["node", "node_worker.js"], request.getfixturevalue("node_worker"), signal.SIGTERM
    )


class Running:
    """An example worker in a child process, its output read by threads: stderr at once,
    stdout at once too unless `read_stdout=False` (then its pipe fills, and the worker
    waits in the middle of a task, until read_stdout())."""

    def __init__(self, example: Example, url: str, read_stdout: bool = True) -> None:
        self.example = example
        self.process = subprocess.Popen(
            [*example.command, url, "plantA"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=example.cwd,
        )
        self._out: list[str] = []
        self._err: list[str] = []
        self._readers: list[threading.Thread] = []
        self._read(self.process.stderr, self._err)
        if read_stdout:
            self.read_stdout()

    def _read(self, stream: IO[str] | None, into: list[str]) -> None:
        reader = threading.Thread(target=lambda: into.extend(stream or ()), daemon=True)
        reader.start()
        self._readers.append(reader)

    def read_stdout(self) -> None:
        self._read(self.process.stdout, self._out)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stderr(self) -> str:
        """What it has written to stderr so far."""
        return "".join(self._err)

    def stop(self) -> tuple[list[str], str, int]:
        """Its stdout lines (sorted), stderr and exit status, after its stop signal."""
        if self.alive():
            self.process.send_signal(self.example.stop_signal)
        self.process.wait(timeout=15)
        for reader in self._readers:
            reader.join(timeout=5)
        return (
            sorted(line.rstrip("\n") for line in self._out),
            self.stderr(),
            self.process.returncode,
        )


@pytest.fixture
def start_worker(example: Example) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(url: str, read_stdout: bool = True) -> Running:
        started.append(Running(example, url, read_stdout))
        return started[-1]

    yield start
    for worker in started:
        if worker.alive():
            worker.process.kill()
            worker.process.wait()


def notices(r: redis.Redis) -> list[str]:
    return sorted(t.decode() for t in r.lrange(DONE, 0, -1))


def working(*tasks: str) -> list[str]:
    return sorted(f"working on {t}" for t in tasks)


def test_worker_idles_and_waits_out_a_restart(start_worker, restartable_redis):
    r = restartable_redis.client()
    worker = start_worker(restartable_redis.url)
    r.lpush(QUEUE, "trt/plantA/1", "trt/plantA/2")
    wait_until(lambda: r.llen(DONE) == 2)
    time.sleep(6.5)  # idle longer than redis-py's default socket timeout (5 s)
    assert worker.alive(), worker.stop()
    # A task in the taken list, as the task in hand is when the connection breaks before
    # its notice: the worker finds it only if it reads its taken list again after the
    # restart.
    r.lpush(TAKEN, "trt/plantA/in-hand")
    restartable_redis.kill()
    # Down for longer than the worker's longest wait between commands (its 1 s take):
    # a worker that connects anew for each command (the shell worker's redis-cli) sees a
    # command fail only if one is sent while Redis is down; a restart shorter than the gap
    # between two of its commands it never sees, and it need not: nothing of its broke.
    time.sleep(2)
    restartable_redis.start()  # the same port, the same data
    r.lpush(QUEUE, "trt/plantA/3", "trt/plantA/4")
    # The workers' waits grow to 5 s while Redis restarts; a loaded machine adds more.
    wait_until(lambda: r.llen(DONE) == 5, timeout_s=60)
    out, err, status = worker.stop()
    assert status == 0, err
    tasks = [f"trt/plantA/{n}" for n in ("1", "2", "in-hand", "3", "4")]
    assert notices(r) == sorted(tasks)
    assert out == working(*tasks)
    assert drained(r, QUEUE, TAKEN)


# Node.js never waits on a full pipe (it keeps what it cannot write yet): for it, the
# task in the taken list of test_worker_idles_and_waits_out_a_restart stands for the
# task in hand.
@pytest.mark.parametrize("example", ["raw", "shell"], indirect=True)
def test_worker_redoes_the_task_in_hand_when_its_notice_fails(start_worker, restartable_redis):
    r = restartable_redis.client()
    # Long tasks, and nobody reading the worker's output: its pipe fills and the worker
    # waits in step 3 (printing), its task taken and not yet notified.
    tasks = [f"trt/plantA/{n:03d}-{'x' * 1000}" for n in range(150)]
    worker = start_worker(restartable_redis.url, read_stdout=False)
    r.lpush(QUEUE, *tasks)

    def stuck_in_a_task() -> bool:
        # The kernel names what a sleeping process waits for: a write into a full pipe.
        waiting_for = Path(f"/proc/{worker.process.pid}/wchan").read_text()
        return "pipe_write" in waiting_for and r.llen(TAKEN) == 1

    wait_until(stuck_in_a_task, timeout_s=30)
    (in_hand,) = (t.decode() for t in r.lrange(TAKEN, 0, -1))
    restartable_redis.kill()
    worker.read_stdout()
    wait_until(worker.stderr, timeout_s=20)  # its notice failed: Redis is down
    restartable_redis.start()  # the same port, the same data
    wait_until(lambda: r.llen(DONE) == len(tasks), timeout_s=30)
    out, err, status = worker.stop()
    assert status == 0, err
    # It cannot know whether the notice was sent: the taken list says it was not, so
    # the task is done again, and notified once.
    assert notices(r) == sorted(tasks)
    assert out == working(*tasks, in_hand)
    assert drained(r, QUEUE, TAKEN)


def test_worker_resumes_after_a_restart_that_lost_the_data(start_worker, tmp_path):
    server = RedisServer(tmp_path)  # keeps nothing on disk
    server.start()
    try:
        r = server.client()
        worker = start_worker(server.url)
        r.lpush(QUEUE, "trt/plantA/1", "trt/plantA/2")
        wait_until(lambda: r.llen(DONE) == 2)
        server.stop()
        server.start()
        assert r.dbsize() == 0
        r.lpush(QUEUE, "trt/plantA/3", "trt/plantA/4")
        wait_until(lambda: r.llen(DONE) == 2, timeout_s=20)
        out, err, status = worker.stop()
        assert status == 0, err
        assert notices(r) == ["trt/plantA/3", "trt/plantA/4"]
        assert out == working("trt/plantA/1", "trt/plantA/2", "trt/plantA/3", "trt/plantA/4")
        assert drained(r, QUEUE, TAKEN)
    finally:
        server.kill()


def test_worker_waits_out_a_failover(start_worker, tmp_path):
    # The server turns replica, as an old master does in a failover, then master again.
    # Its master never answers, so it keeps its data meanwhile.
    server = RedisServer(tmp_path)
    server.start()
    try:
        r = server.client()
        worker = start_worker(server.url)
        r.lpush(QUEUE, "trt/plantA/1")
        wait_until(lambda: r.llen(DONE) == 1)
        r.replicaof("127.0.0.1", str(free_port()))

        def refusals() -> int:
            return int(r.info("errorstats").get("errorstat_READONLY", {}).get("count", 0))

        # Its blocked take dropped (UNBLOCKED), the worker is refused (READONLY) and
        # comes back for more.
        wait_until(lambda: refusals() >= 3, timeout_s=20)
        assert worker.alive(), worker.stop()
        r.replicaof("NO", "ONE")
        r.lpush(QUEUE, "trt/plantA/2", "trt/plantA/3")
        wait_until(lambda: r.llen(DONE) == 3, timeout_s=20)
        out, err, status = worker.stop()
        assert status == 0, err
        assert notices(r) == ["trt/plantA/1", "trt/plantA/2", "trt/plantA/3"]
        assert out == working("trt/plantA/1", "trt/plantA/2", "trt/plantA/3")
        assert drained(r, QUEUE, TAKEN)
    finally:
        server.kill()


@pytest.mark.parametrize(
    ("example", "name"), [("raw", "raw_worker"), ("node", "node_worker")], indirect=["example"]
)
def test_worker_stops_on_a_queue_of_the_wrong_type(start_worker, r, redis_server, name):
    r.set(QUEUE, "not a list")
    worker = start_worker(redis_server.url)
    worker.process.wait(timeout=15)
    out, err, status = worker.stop()
    assert (out, err, status) == (
        [],
        f"{name}: Redis refused a command: WRONGTYPE Operation against a key holding the"
        " wrong kind of value\n",
        1,
    )


@pytest.mark.parametrize("example", ["shell"], indirect=True)
def test_shell_worker_waits_while_the_queue_has_the_wrong_type(start_worker, r, redis_server):
    r.set(QUEUE, "not a list")
    r.config_resetstat()
    worker = start_worker(redis_server.url)
    time.sleep(2)
    refused = int(r.info("errorstats").get("errorstat_WRONGTYPE", {}).get("count", 0))
    # Tried again with growing waits (0.1 s, 0.2 s, ...), not in a tight loop.
    assert 2 <= refused <= 10
    r.delete(QUEUE)
    r.lpush(QUEUE, "trt/plantA/1")
    wait_until(lambda: r.llen(DONE) == 1, timeout_s=20)
    out, err, status = worker.stop()
    assert status == 0, err
    assert out == working("trt/plantA/1")
    assert "WRONGTYPE" in err


@pytest.mark.parametrize("example", ["raw", "shell", "node"], indirect=True)
def test_worker_without_its_arguments_prints_its_usage(example: Example):
    done = subprocess.run(
        example.command, cwd=example.cwd, capture_output=True, text=True, timeout=15
    )
    name = Path(example.command[-1]).name
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("usage: ") and f"{name} REDIS_URL PROCESS_ID" in done.stderr


def test_library_worker_without_its_arguments_prints_its_usage():
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "library_worker.py"), "redis://127.0.0.1/"],
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert (done.returncode, done.stdout, done.stderr) == (
        2,
        "",
        "usage: library_worker.py REDIS_URL PROCESS_ID\n",
    )


def test_raw_worker_refuses_a_url_it_cannot_read():
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "raw_worker.py"), "http://127.0.0.1/", "plantA"],
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith("raw_worker: Redis URL must specify one of the following")


def test_worker_on_a_server_with_a_password(start_worker, tmp_path):
    server = RedisServer(tmp_path, password="s3cret-pw")
    server.start()
    try:
        r = server.client()
        worker = start_worker(server.url)
        r.lpush(QUEUE, "trt/plantA/1")
        wait_until(lambda: r.llen(DONE) == 1)
        # Nothing on stderr: redis-cli warns of a password on its command line unless told
        # not to, at every command.
        assert worker.stop() == (working("trt/plantA/1"), "", 0)
    finally:
        server.kill()


def test_worker_waits_out_a_frozen_server(start_worker, example: Example, tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    assert server.process is not None
    try:
        r = server.client()
        worker = start_worker(server.url)
        r.lpush(QUEUE, "trt/plantA/1")
        wait_until(lambda: r.llen(DONE) == 1)
        # Longer than the raw and Node.js workers' read timeout (6 s): they give up on the
        # frozen connection and try new ones; redis-cli just waits.
        server.process.send_signal(signal.SIGSTOP)
        time.sleep(7.5)
        server.process.send_signal(signal.SIGCONT)
        assert worker.alive(), worker.stop()
        r.lpush(QUEUE, "trt/plantA/2", "trt/plantA/3")
        wait_until(lambda: r.llen(DONE) == 3, timeout_s=20)
        out, err, status = worker.stop()
        assert status == 0, err
        assert notices(r) == ["trt/plantA/1", "trt/plantA/2", "trt/plantA/3"]
        assert out == working("trt/plantA/1", "trt/plantA/2", "trt/plantA/3")
        assert drained(r, QUEUE, TAKEN)
        assert ("Redis unavailable, retrying" in err) == (example.command[0] != "bash"), err
    finally:
        server.process.send_signal(signal.SIGCONT)
        server.kill()
