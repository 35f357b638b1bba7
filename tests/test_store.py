"""The Redis edge: pipelined replies read in order, and what a lost connection does to
replies still awaited."""

from __future__ import annotations

from pathlib import Path

import pytest

from resc.core.errors import StoreError
from resc.engine.rules import Result
from resc.engine.store import Outcome, Store
from tests.conftest import RedisServer


def test_pipelined_replies_come_back_in_the_order_sent(r, redis_server):
    store = Store(redis_server.url)
    store.connect()
    r.lpush("in", "a", "b", "c")
    first = store.send_take("in", "in/taken", 1)
    second = store.send_take("in", "in/taken", 5)
    assert second.get() == [b"b", b"c"]  # reads the first reply on the way
    assert first.get() == [b"a"]
    store.close()


def test_a_lost_connection_fails_every_reply_still_awaited(tmp_path: Path):
    server = RedisServer(tmp_path)
    server.start()
    store = Store(server.url)
    store.connect()
    # A blocking command first, so that no reply can arrive before the server dies.
    blocked = store._send((b"BLPOP", b"nothing", b"5"), "waiting", lambda reply: reply)
    queued = store.send_take("in", "in/taken", 10)
    server.kill()
    with pytest.raises(StoreError, match=r"^waiting: connection lost: "):
        blocked.get()
    with pytest.raises(StoreError, match=r"the connection was lost before the reply$"):
        queued.get()
    store.close()


def test_a_commit_for_an_event_no_longer_taken_pushes_nothing(r, redis_server):
    # As when a second resc's start-up recovery took this one's events in hand back.
    store = Store(redis_server.url)
    store.connect()
    r.lpush("in", "e1", "e2")
    assert store.take("in", "in/taken", 2) == [b"e1", b"e2"]
    r.lrem("in/taken", 1, "e1")
    r.lpush("in", "e1")
    results = [Result(b"t1", b"todo", b"todo-set", "rule")]
    outcomes = [Outcome(b"e1", results), Outcome(b"e2", [Result(b"t2", b"todo", None, "rule")])]
    report = store.commit("in/taken", "in/failed", outcomes, None, input_queue="in")
    assert report.status == "mc"
    assert r.lrange("todo", 0, -1) == [b"t2"]
    assert r.zcard("todo-set") == 0
    assert r.lrange("in", 0, -1) == [b"e1"]  # to be processed again, once
    assert r.llen("in/taken") == 0
    store.close()
