"""Recovery, takes and replays: every script checks its keys' types before its first
write, identical events keep their own counts and records, only the events being
processed count as interrupted, and a watcher waits longer after each same failure."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
import redis

from resc.config.load import config_from_source
from resc.config.source import read_source
from resc.core.errors import StoreError
from resc.core.failures import FailedRecord, decode
from resc.engine.instances import Identity
from resc.engine.rules import Result
from resc.engine.store import Outcome, Recovered, Store
from resc.engine.watcher import Watcher
from tests.conftest import make_config, running, wait_until, write_config


@pytest.fixture
def store(redis_server):
    store = Store(redis_server.url)
    store.connect()
    yield store
    store.close()


def recover(store: Store, max_attempts: int = 5) -> Recovered:
    recovered = store.recover("in", "in/taken", "in/failed", max_attempts)
    assert recovered is not None
    return recovered


def fail(store: Store, event: str, reason: str) -> str:
    """Commit `event`, taken just now, as failed."""
    return store.commit(
        "in/taken", "in/failed", [Outcome(event.encode(), failure=reason)], None, input_queue="in"
    ).status


def records(r: redis.Redis, event: str) -> list[FailedRecord]:
    return decode(r.hget("in/failed/reasons", event))


def wrong_type(r: redis.Redis, key: str, wanted: str) -> str:
    """Give `key` a type other than `wanted`; the type it now has."""
    r.delete(key)
    if wanted == "string":
        r.rpush(key, "not a string")
        return "list"
    r.set(key, "not a " + wanted)
    return "string"


def state(r: redis.Redis) -> dict[str, Any]:
    return {key.decode(): r.dump(key) for key in sorted(r.keys("*"))}


# --- a wrong-typed key: an error naming it, and nothing written -------------------


@pytest.mark.parametrize(
    ("key", "wanted"),
    [
        ("in", "list"),
        ("in/taken/attempts", "hash"),
        ("in/failed", "list"),
        ("in/failed/reasons", "hash"),
        ("in/taken/ahead", "string"),
    ],
)
def test_a_recovery_with_a_wrong_typed_key_changes_nothing(r, store, key, wanted):
    # An event about to be given up: the recovery would fail it and record why.
    r.lpush("in/taken", "x")
    r.hset("in/taken/attempts", "x", 4)
    actual = wrong_type(r, key, wanted)
    before = state(r)
    with pytest.raises(StoreError) as raised:
        recover(store)
    assert str(raised.value) == (
        f"recovering in/taken: {key} holds a {actual}, where resc keeps a {wanted}"
    )
    assert state(r) == before


@pytest.mark.parametrize(("key", "wanted"), [("in/taken", "list"), ("in/taken/ahead", "string")])
def test_a_take_with_a_wrong_typed_key_leaves_the_events_in_the_input_queue(r, store, key, wanted):
    r.lpush("in", "a", "b")
    actual = wrong_type(r, key, wanted)
    with pytest.raises(StoreError, match=f"^taking from in: {key} holds a {actual}, "):
        store.take("in", "in/taken", 10)
    assert r.lrange("in", 0, -1) == [b"b", b"a"]


@pytest.mark.parametrize(("key", "wanted"), [("in", "list"), ("in/failed/reasons", "hash")])
def test_a_replay_with_a_wrong_typed_key_leaves_the_event_failed(r, store, key, wanted):
    r.lpush("in/failed", "x")
    if key != "in/failed/reasons":
        r.hset("in/failed/reasons", "x", "why")
    actual = wrong_type(r, key, wanted)
    before = state(r)
    with pytest.raises(StoreError, match=f"^replaying in/failed: {key} holds a {actual}, "):
        store.replay_one("in/failed", "in")
    assert state(r) == before


@pytest.mark.parametrize(
    ("key", "wanted"),
    [("in/taken/w1/heartbeat", "string"), ("in/taken/instances", "set"), ("in/taken/w1", "list")],
)
def test_a_heartbeat_with_a_wrong_typed_key_is_named_and_writes_nothing(r, store, key, wanted):
    actual = wrong_type(r, key, wanted)
    before = state(r)
    with pytest.raises(StoreError) as raised:
        store.heartbeat(
            "in/taken/w1/heartbeat", "in/taken/instances", "in/taken/w1", "w1", "{}", 5000, True
        )
    assert str(raised.value) == (
        f"refreshing in/taken/w1/heartbeat: {key} holds a {actual}, where resc keeps a {wanted}"
    )
    assert state(r) == before


@pytest.mark.parametrize(
    ("key", "wanted"), [("in/taken/w1/heartbeat", "string"), ("in/taken/instances", "set")]
)
def test_a_recovery_of_a_dead_instance_with_a_wrong_typed_key_changes_nothing(
    r, store, key, wanted
):
    r.lpush("in/taken/w1", "x")
    r.sadd("in/taken/instances", "w1")
    actual = wrong_type(r, key, wanted)
    before = state(r)
    with pytest.raises(StoreError) as raised:
        store.recover(
            "in",
            "in/taken/w1",
            "in/failed",
            5,
            attempts_of="in/taken",
            liveness="in/taken/w1/heartbeat",
            registry="in/taken/instances",
            leaving="w1",
            only_if_dead=True,
        )
    assert str(raised.value) == (
        f"recovering in/taken/w1: {key} holds a {actual}, where resc keeps a {wanted}"
    )
    assert state(r) == before


def test_a_take_with_a_wrong_typed_heartbeat_takes_nothing(r, store):
    r.lpush("in", "a")
    r.rpush("in/taken/w1/heartbeat", "x")
    with pytest.raises(StoreError, match=r"^taking from in: in/taken/w1/heartbeat holds a list, "):
        store.take("in", "in/taken/w1", 10, "in/taken/w1/heartbeat")
    assert r.lrange("in", 0, -1) == [b"a"]


# --- identical events -------------------------------------------------------------


def test_identical_events_in_hand_count_one_interruption_per_recovery(r, store):
    r.lpush("in/taken", "x", "x", "x", "y")
    assert recover(store) == Recovered(4, 0, 4)
    assert r.hgetall("in/taken/attempts") == {b"x": b"1", b"y": b"1"}
    assert r.lrange("in", 0, -1) == [b"y", b"x", b"x", b"x"]


def test_identical_events_given_up_each_keep_a_record(r, store):
    r.lpush("in/taken", "x", "x")
    r.hset("in/taken/attempts", "x", 2)
    assert recover(store, max_attempts=3) == Recovered(0, 2, 0)
    reason = "interrupted 3 times (resc stopped or lost Redis while processing it): "
    reason += "given up after max_attempts"
    assert [(rec.reason, rec.attempts) for rec in records(r, "x")] == [(reason, 3)] * 2
    assert r.lrange("in/failed", 0, -1) == [b"x", b"x"]
    assert not r.exists("in/taken/attempts", "in/taken")


def test_a_commit_of_one_copy_keeps_the_count_of_the_other(r, store):
    r.lpush("in", "x", "x")
    assert store.take("in", "in/taken", 2) == [b"x", b"x"]
    r.hset("in/taken/attempts", "x", 2)
    done = [Outcome(b"x", [Result(b"t", b"todo", None, "rule")])]
    assert store.commit("in/taken", "in/failed", done, None, input_queue="in").status == "c"
    assert r.hgetall("in/taken/attempts") == {b"x": b"2"}
    # The other copy fails: its record counts the interruptions and this attempt.
    assert fail(store, "x", "bad") == "f"
    assert not r.exists("in/taken/attempts")
    (record,) = records(r, "x")
    assert (record.reason, record.attempts) == ("bad", 3)


def test_identical_failed_events_each_keep_their_record_through_a_replay(r, store):
    r.lpush("in", "x", "x")
    store.take("in", "in/taken", 2)
    before = time.time()
    assert fail(store, "x", "first") == "f"
    assert fail(store, "x", "second") == "f"
    kept = records(r, "x")
    assert [(rec.reason, rec.attempts) for rec in kept] == [("first", 1), ("second", 1)]
    assert all(rec.time_s is not None and before - 1 < rec.time_s < time.time() + 1 for rec in kept)
    assert store.replay_one("in/failed", "in") == b"x"
    assert records(r, "x") == kept[1:]
    assert store.replay_one("in/failed", "in") == b"x"
    assert not r.exists("in/failed/reasons", "in/failed")
    assert store.replay_one("in/failed", "in") is None
    assert r.lrange("in", 0, -1) == [b"x", b"x"]


def test_a_plain_reason_of_an_older_resc_is_read_as_one_record(r, store):
    r.lpush("in/failed", "x")
    r.hset("in/failed/reasons", "x", "an old reason")
    r.lpush("in", "x")
    store.take("in", "in/taken", 1)
    assert fail(store, "x", "new") == "f"
    assert [rec.reason for rec in records(r, "x")] == ["an old reason", "new"]
    assert records(r, "x")[0] == FailedRecord("an old reason")
    assert store.replay_one("in/failed", "in") == b"x"
    assert [rec.reason for rec in records(r, "x")] == ["new"]


def test_failed_events_lists_each_copy_with_its_own_record(r, store):
    r.lpush("in", "x", "y", "x")
    store.take("in", "in/taken", 3)
    for reason in ("one", "two", "three"):
        fail(store, "y" if reason == "two" else "x", reason)
    total, listed = store.failed_events("in/failed", 10)
    assert total == 3
    assert [(event, rec.reason if rec else None) for event, rec in listed] == [
        (b"x", "one"),
        (b"y", "two"),
        (b"x", "three"),
    ]


# --- taken ahead is not in processing -----------------------------------------------


def test_only_the_events_being_processed_count_as_interrupted(r, store):
    r.lpush("in", "e1", "e2", "e3", "e4", "e5")
    assert store.wait_take("in", "in/taken") == b"e1"  # being processed
    assert store.take("in", "in/taken", 2) == [b"e2", b"e3"]  # taken ahead of it
    assert recover(store) == Recovered(3, 0, 1)
    assert r.hgetall("in/taken/attempts") == {b"e1": b"1"}
    # The next batch in processing: e2 and e3; e4 taken ahead.
    assert store.take("in", "in/taken", 3) == [b"e1", b"e2", b"e3"]
    store.commit("in/taken", "in/failed", [Outcome(b"e1", [])], None, input_queue="in")
    assert store.take("in", "in/taken", 1) == [b"e4"]
    assert recover(store) == Recovered(3, 0, 2)
    assert r.hgetall("in/taken/attempts") == {b"e2": b"1", b"e3": b"1"}
    assert r.lrange("in", 0, -1) == [b"e5", b"e4", b"e3", b"e2"]
    assert not r.exists("in/taken/ahead")


def test_a_recovery_on_stop_counts_nothing(r, store):
    r.lpush("in", "e1", "e2")
    store.take("in", "in/taken", 1)
    store.take("in", "in/taken", 1)
    assert recover(store, max_attempts=0) == Recovered(2, 0, 0)
    assert not r.exists("in/taken/attempts", "in/taken", "in/taken/ahead")


# --- the watcher -------------------------------------------------------------------


def watcher_for(redis_server, tmp_path, store: Store | None = None, **settings: Any) -> Watcher:
    config = make_config(
        redis_server.url,
        [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "out"}}], **settings}],
    )
    loaded = config_from_source(read_source(write_config(tmp_path, config)))
    return Watcher(loaded.watchers[0], loaded, store=store, identity=Identity("w1"))


class CountingStore(Store):
    """Counts its connections; every blocking take fails as a refused command would."""

    connects = 0

    def connect(self) -> None:
        self.connects += 1
        super().connect()

    def wait_take(self, input_queue: str, taken_queue: str) -> bytes | None:
        raise StoreError(f"taking from {input_queue}: refused")


def run_for(watcher: Watcher, seconds: float) -> None:
    thread = threading.Thread(target=watcher.run)
    thread.start()
    time.sleep(seconds)
    watcher.stop.set()
    thread.join(10)
    assert not thread.is_alive()


def test_the_same_failure_after_each_recovery_waits_longer_each_time(r, redis_server, tmp_path):
    store = CountingStore(redis_server.url)
    run_for(watcher_for(redis_server, tmp_path, store), 3.0)
    # Waits of 0.1, 0.2, 0.4, 0.8, 1.6 s (less up to a fifth): at most 6 tries in 3 s.
    assert 3 <= store.connects <= 6


def test_a_wrong_typed_reasons_key_is_logged_and_the_event_stays_taken(
    r, redis_server, tmp_path, caplog
):
    caplog.set_level(logging.DEBUG, logger="resc.watcher")
    r.lpush("in/taken/w1", "x")
    r.hset("in/taken/attempts", "x", 4)
    r.set("in/failed/reasons", "a string")
    store = CountingStore(redis_server.url)
    run_for(watcher_for(redis_server, tmp_path, store), 2.0)
    assert r.lrange("in/taken/w1", 0, -1) == [b"x"]
    assert r.hgetall("in/taken/attempts") == {b"x": b"4"}
    assert not r.exists("in/failed", "in")
    assert store.connects <= 6
    errors = [rec.msg for rec in caplog.records if rec.levelno == logging.ERROR]
    assert [(e["event"], e["error"]) for e in errors] == [  # type: ignore[index]
        (
            "Redis refused a command, retrying",
            "recovering in/taken/w1: in/failed/reasons holds a string, where resc keeps a hash",
        )
    ]


def test_a_watcher_recovers_what_an_older_resc_left_in_the_plain_taken_queue(
    r, redis_server, tmp_path
):
    config = make_config(
        redis_server.url, [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "out"}}]}]
    )
    with running(config, tmp_path):
        r.lpush("in", "first")
        wait_until(lambda: r.llen("out") == 1)
        r.lpush("in/taken", "left")  # as by an older resc that crashed with it in hand
        # The sweep runs every third of the heartbeat's time to live (15 s).
        wait_until(lambda: r.llen("out") == 2, timeout_s=15)
    assert r.lrange("out", 0, -1) == [b"left", b"first"]
    assert not r.exists("in/taken", "in/taken/attempts")
