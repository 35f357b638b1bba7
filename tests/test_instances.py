"""Several resc on one config: each instance takes into its own list, keeps a heartbeat,
and puts back the lists of dead instances, never those of live ones. Counted exactly:
one task per event, across kill -9 and a process stalled past its heartbeat."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from resc.config.load import config_from_source
from resc.config.source import read_source
from resc.core.errors import EXIT_FATAL, EXIT_USAGE
from resc.engine.daemon import Daemon
from resc.engine.store import Store
from tests.conftest import (
    RedisServer,
    drained,
    in_hand,
    make_config,
    resc_process,
    run_resc,
    wait_until,
    write_config,
)
from tests.test_crash import assert_exactly_once, preload
from tests.webservice import ScriptedService

TTL = "3"  # seconds: the shortest heartbeat, so that dead instances are found soon


def backlog_config(url: str, dedup: bool = False, **top: Any) -> dict[str, Any]:
    make: dict[str, str] = {"task": "task/${n}", "queue": "todo"}
    if dedup:
        make["set"] = "todo-set"
    rule = {"on": r"^ev/(?P<n>\d+)$", "make": make}
    return make_config(url, [{"input_queue": "in", "rules": [rule]}], **top)


_started: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_process_left() -> Iterator[None]:
    """A test that fails half-way leaves no resc running on the next test's queues."""
    yield
    while _started:
        process = _started.pop()
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.kill()
            process.communicate()


def start(path: Path, instance: str, *more: str) -> subprocess.Popen[str]:
    process = resc_process("--instance", instance, "--heartbeat-ttl", TTL, *more, str(path))
    _started.append(process)
    return process


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    return err


def registered(r: redis.Redis) -> set[str]:
    return {i.decode() for i in r.smembers("in/taken/instances")}


def test_two_instances_share_a_backlog_and_count_every_event_once(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
):
    count = 20_000
    path = write_config(tmp_path, backlog_config(redis_server.url))
    a, b = start(path, "a"), start(path, "b")
    busy: set[str] = set()
    try:
        wait_until(lambda: registered(r) == {"a", "b"}, timeout_s=30)
        # Pushed once both wait for events: a backlog pushed before could be gone before
        # the second instance is up.
        wait_until(lambda: sum(c.get("cmd") == "blmove" for c in r.client_list()) >= 2)
        preload(r, count)

        def done() -> bool:
            busy.update(i for i in ("a", "b") if r.llen(f"in/taken/{i}"))
            return r.llen("todo") >= count and drained(r, "in", "in/taken")

        wait_until(done, timeout_s=120)
    finally:
        errors = [stop(a), stop(b)]
    assert busy == {"a", "b"}, "both instances had events in hand"
    assert_exactly_once(r, count)
    assert "no longer in this instance's taken list" not in "".join(errors)
    # A clean stop leaves nothing: no list, no heartbeat, no registration.
    assert not r.exists("in/taken/a", "in/taken/b", "in/taken/a/heartbeat", "in/taken/instances")
    assert not r.exists("in/failed", "in/taken/attempts")


@pytest.mark.parametrize("dedup", [False, True], ids=["no set", "with a set"])
def test_three_instances_with_one_killed_give_exactly_one_task_per_event(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path, dedup: bool
):
    count = 30_000
    preload(r, count)
    path = write_config(tmp_path, backlog_config(redis_server.url, dedup))
    processes = {name: start(path, name) for name in ("a", "b", "c")}
    pushed = [count]
    killed = threading.Event()

    def keep_them_busy() -> None:
        # Events keep coming until b is killed, however fast the three are.
        producer = redis.Redis(port=redis_server.port)
        while not killed.is_set():
            if producer.llen("in") < 5_000:
                first = pushed[0]
                producer.lpush("in", *(f"ev/{i}" for i in range(first, first + 5_000)))
                pushed[0] = first + 5_000
            time.sleep(0.01)
        producer.close()

    feeding = threading.Thread(target=keep_them_busy)
    feeding.start()
    try:
        wait_until(lambda: registered(r) == {"a", "b", "c"}, timeout_s=30)
        wait_until(lambda: r.llen("todo") >= 5_000, timeout_s=60)
        # Killed with events in hand.
        wait_until(lambda: r.llen("in/taken/b") > 0, timeout_s=30)
        processes["b"].send_signal(signal.SIGKILL)
        processes["b"].wait()
        killed.set()
        feeding.join()
        count = pushed[0]
        caught = r.llen("in/taken/b")
        print(f"killed b with {caught} events in its taken list")
        # Another instance puts them back once the heartbeat has expired.
        wait_until(lambda: "b" not in registered(r), timeout_s=30)
        assert not r.exists("in/taken/b", "in/taken/b/heartbeat", "in/taken/b/ahead")
        wait_until(lambda: r.llen("todo") >= count and drained(r, "in", "in/taken"), timeout_s=120)
    finally:
        killed.set()
        feeding.join()
        for name in ("a", "c"):
            stop(processes[name])
    assert_exactly_once(r, count)
    if dedup:
        assert r.zcard("todo-set") == count
    # One interruption per event at most: nothing failed, and the counts were forgotten
    # when the events were committed.
    assert not r.exists("in/failed", "in/taken/attempts", "in/taken/instances")


def slow_config(url: str, web: ScriptedService, delay_s: float) -> dict[str, Any]:
    web.answer("/slow", {"v": "ok"}, delay_s=delay_s)
    rule = {
        "on": r"^ev/(?P<n>\d+)$",
        "fetch": [{"url": web.url + "/slow", "returns": "s", "timeout": 30, "retries": 0}],
        "make": {"task": "task/${n}", "queue": "todo"},
    }
    return make_config(url, [{"input_queue": "in", "rules": [rule]}])


def test_a_live_instance_is_never_recovered_by_another(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path, web: ScriptedService
):
    # Much longer than a heartbeat's time to live: only the heartbeat tells it lives.
    path = write_config(tmp_path, slow_config(redis_server.url, web, delay_s=25))
    r.lpush("in", "ev/1")
    a = start(path, "a")
    b = None
    try:
        wait_until(lambda: web.paths == ["/slow"], timeout_s=20)
        b = start(path, "b")
        wait_until(lambda: registered(r) == {"a", "b"}, timeout_s=20)
        time.sleep(3 * float(TTL))  # several sweeps of b
        assert r.lrange("in/taken/a", 0, -1) == [b"ev/1"]
        assert web.paths == ["/slow"]
        assert not r.exists("in", "in/taken/attempts", "in/failed")
        wait_until(lambda: r.llen("todo") == 1, timeout_s=40)
    finally:
        stop(a)
        if b is not None:
            stop(b)
    assert r.lrange("todo", 0, -1) == [b"task/1"]
    assert web.paths == ["/slow"]


def test_a_recovery_of_a_live_instance_is_refused_by_the_script(r: redis.Redis, redis_server):
    store = Store(redis_server.url)
    store.connect()
    try:
        r.lpush("in/taken/a", "e")
        r.sadd("in/taken/instances", "a")
        r.set("in/taken/a/heartbeat", "{}", px=5000)
        arguments: dict[str, Any] = {
            "attempts_of": "in/taken",
            "liveness": "in/taken/a/heartbeat",
            "registry": "in/taken/instances",
            "leaving": "a",
            "only_if_dead": True,
        }
        # The caller saw it dead a moment ago; the script sees it alive: nothing done.
        assert store.recover("in", "in/taken/a", "in/failed", 5, **arguments) is None
        assert r.lrange("in/taken/a", 0, -1) == [b"e"]
        assert registered(r) == {"a"}
        r.delete("in/taken/a/heartbeat")
        recovered = store.recover("in", "in/taken/a", "in/failed", 5, **arguments)
        assert recovered is not None and recovered.back == 1
        # A second sweeper, a moment later, finds nothing more to move.
        again = store.recover("in", "in/taken/a", "in/failed", 5, **arguments)
        assert again is not None and again.back == 0
        assert r.lrange("in", 0, -1) == [b"e"]
        assert r.hgetall("in/taken/attempts") == {b"e": b"1"}
        assert not registered(r)
    finally:
        store.close()


def test_a_stalled_instance_loses_its_list_and_nothing_is_duplicated(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path, web: ScriptedService
):
    count = 200
    config = slow_config(redis_server.url, web, delay_s=0.02)
    config["watchers"][0]["concurrency"] = 4
    config["watchers"][0]["batch"] = 20
    path = write_config(tmp_path, config)
    preload(r, count)
    a = start(path, "a")
    b = None
    try:
        wait_until(lambda: r.llen("in/taken/a") > 0 and r.llen("todo") > 0, timeout_s=20)
        a.send_signal(signal.SIGSTOP)
        held = r.lrange("in/taken/a", 0, -1)
        assert held
        b = start(path, "b")
        # b puts back what a held once a's heartbeat has expired, and carries on.
        wait_until(lambda: "a" not in registered(r), timeout_s=30)
        wait_until(lambda: r.llen("todo") >= count // 2, timeout_s=60)
        a.send_signal(signal.SIGCONT)
        # a notices, puts back what it took meanwhile, and goes on under a new id.
        wait_until(lambda: "a.1" in registered(r), timeout_s=30)
        wait_until(lambda: r.llen("todo") >= count and drained(r, "in", "in/taken"), timeout_s=60)
    finally:
        a.send_signal(signal.SIGCONT)
        err = stop(a)
        if b is not None:
            stop(b)
    tasks = Counter(r.lrange("todo", 0, -1))
    assert set(tasks) == {f"task/{i}".encode() for i in range(count)}
    assert max(tasks.values()) == 1
    assert "heartbeat expired" in err
    assert not r.exists("in/failed", "in/taken/instances")


def test_the_plain_taken_queue_of_an_older_resc_is_recovered_when_it_no_longer_holds_it(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
):
    # An older resc (one instance per taken queue) holds in/taken, with two events in
    # hand; one event of the original's kind is waiting.
    r.set("in/taken/owner", "old-host:1:00000000.00000000", px=10_000)
    r.lpush("in/taken", "ev/1", "ev/2")
    r.set("in/taken/ahead", 1)  # ev/2 was only taken ahead
    r.lpush("in", "ev/3")
    path = write_config(tmp_path, backlog_config(redis_server.url))
    a = start(path, "a")
    try:
        wait_until(lambda: r.lrange("todo", 0, -1) == [b"task/3"], timeout_s=20)
        # While the older resc holds its owner key, its events are its own.
        assert r.lrange("in/taken", 0, -1) == [b"ev/2", b"ev/1"]
        wait_until(lambda: r.llen("todo") == 3, timeout_s=30)
    finally:
        stop(a)
    assert r.lrange("todo", 0, -1) == [b"task/2", b"task/1", b"task/3"]
    assert not r.exists("in/taken", "in/taken/ahead", "in/taken/attempts", "in/failed")


def test_identical_events_across_instances_each_give_their_task(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
):
    events = [f"ev/{i % 50}" for i in range(5_000)]  # each text 100 times
    for first in range(0, len(events), 1000):
        r.lpush("in", *events[first : first + 1000])
    path = write_config(tmp_path, backlog_config(redis_server.url))
    a, b = start(path, "a"), start(path, "b")
    try:
        # Both running (their signal handlers installed) before either may be stopped:
        # one alone can finish the backlog while the other still starts.
        wait_until(lambda: registered(r) == {"a", "b"}, timeout_s=60)
        wait_until(
            lambda: r.llen("todo") >= len(events) and drained(r, "in", "in/taken"), timeout_s=60
        )
    finally:
        stop(a)
        stop(b)
    assert Counter(r.lrange("todo", 0, -1)) == Counter(f"task/{e[3:]}".encode() for e in events)


def test_an_instance_id_in_use_by_a_live_resc_is_refused(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
):
    path = write_config(tmp_path, backlog_config(redis_server.url))
    a = start(path, "a")
    try:
        wait_until(lambda: registered(r) == {"a"}, timeout_s=20)
        second = start(path, "a")
        _, err = second.communicate(timeout=30)
        assert second.returncode == EXIT_FATAL
        assert "instance id a is used by another live resc" in err
        assert "Traceback" not in err
        assert a.poll() is None
    finally:
        stop(a)


def test_an_instance_id_of_a_crashed_resc_is_taken_over_once_its_heartbeat_expires(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
):
    r.set("in/taken/a/heartbeat", '{"host":"h","pid":1,"ttl_ms":6000,"token":"x"}', px=6000)
    r.sadd("in/taken/instances", "a")
    r.lpush("in/taken/a", "ev/1")  # in hand when it crashed
    path = write_config(tmp_path, backlog_config(redis_server.url))
    a = start(path, "a")
    try:
        wait_until(lambda: r.lrange("todo", 0, -1) == [b"task/1"], timeout_s=20)
    finally:
        err = stop(a)
    assert "instance id in use: waiting for its heartbeat to expire" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--instance", "a/b"], "'a/b' is not an instance id"),
        (["--instance", "attempts"], "'attempts' names one of resc's own keys"),
        (["--heartbeat-ttl", "0"], "the heartbeat must live from 3 to 3600 seconds"),
        (["--heartbeat-ttl", "nan"], "the heartbeat must live from 3 to 3600 seconds"),
        (["--heartbeat-ttl", "soon"], "'soon' is not a number of seconds"),
    ],
)
def test_bad_instance_options_are_usage_errors(tmp_path: Path, args: list[str], message: str):
    path = write_config(tmp_path, backlog_config("redis://127.0.0.1:1"))
    for form in (["run", *args, str(path)], [*args, str(path)]):
        result = run_resc(*form)
        assert result.returncode == EXIT_USAGE
        assert message in result.stderr
        assert "Traceback" not in result.stderr


def test_a_bad_instance_id_in_the_environment_is_a_usage_error(tmp_path: Path):
    path = write_config(tmp_path, backlog_config("redis://127.0.0.1:1"))
    result = run_resc(str(path), env={"RESC_INSTANCE": "two words"})
    assert result.returncode == EXIT_USAGE
    assert "'two words' is not an instance id" in result.stderr


def test_a_heartbeat_ttl_out_of_bounds_in_the_config_names_the_field(tmp_path: Path):
    path = write_config(tmp_path, backlog_config("redis://127.0.0.1:1", heartbeat_ttl=1))
    for command in (["check", str(path)], [str(path)]):
        result = run_resc(*command)
        assert result.returncode == EXIT_USAGE
        output = result.stdout + result.stderr
        assert "heartbeat_ttl" in output and "greater than or equal to 3" in output


def test_the_instance_id_from_the_environment_names_the_taken_list(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
):
    path = write_config(tmp_path, backlog_config(redis_server.url))
    process = resc_process(str(path), env={"RESC_INSTANCE": "pod-0"})
    _started.append(process)
    try:
        wait_until(lambda: registered(r) == {"pod-0"}, timeout_s=20)
        assert in_hand(r) == []
        assert r.ttl("in/taken/pod-0/heartbeat") > 10  # the default time to live: 15 s
    finally:
        stop(process)


def test_a_watcher_restarted_by_a_reload_joins_under_the_next_id(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
):
    config = backlog_config(redis_server.url)
    path = write_config(tmp_path, config)
    daemon = Daemon(config_from_source(read_source(path)), config_path=path, instance="pod-0")
    daemon.start()
    try:
        wait_until(lambda: registered(r) == {"pod-0"})
        r.lpush("in", "ev/1")
        wait_until(lambda: r.llen("todo") == 1)
        config["watchers"][0]["batch"] = 10  # a setting: the watcher starts anew
        write_config(tmp_path, config)
        assert daemon.reload()
        # The old instance left (nothing in hand), the new one has the next id.
        wait_until(lambda: registered(r) == {"pod-0.1"})
        assert not r.exists("in/taken/pod-0/heartbeat")
        r.lpush("in", "ev/2")
        wait_until(lambda: r.llen("todo") == 2)
    finally:
        daemon.stop.set()
        assert daemon.wait() == 0
    assert r.lrange("todo", 0, -1) == [b"task/2", b"task/1"]
    assert not r.exists("in/taken/instances", "in/taken/attempts")


def test_a_wrong_typed_registry_is_named_and_resc_goes_on_once_it_is_fixed(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
):
    r.set("in/taken/instances", "not a set")
    r.lpush("in", "ev/1")
    path = write_config(tmp_path, backlog_config(redis_server.url))
    a = start(path, "a")
    try:
        time.sleep(3)
        assert r.lrange("in", 0, -1) == [b"ev/1"]  # nothing taken meanwhile
        r.delete("in/taken/instances")
        wait_until(lambda: r.lrange("todo", 0, -1) == [b"task/1"], timeout_s=20)
        # The id given is kept: the failed joins did not use it up.
        assert registered(r) == {"a"}
    finally:
        err = stop(a)
    assert (
        "refreshing in/taken/a/heartbeat: in/taken/instances holds a string, where resc "
        "keeps a set" in err
    )
    assert "Traceback" not in err
