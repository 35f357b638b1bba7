"""The Redis edge: pipelined replies read in order, and what a lost connection does to
replies still awaited."""

from __future__ import annotations

from pathlib import Path

import pytest

from resc.errors import StoreError
from resc.store import Store
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
