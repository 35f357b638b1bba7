"""Redis URLs: TCP with a db number, unix sockets, passwords kept out of messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from resc.connection.edge import converted_errors, redact_url
from resc.core.errors import RedisUnavailable, StoreError
from resc.engine.store import Store
from tests.conftest import RedisServer, make_config, running, wait_until


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:pw@host:6379/2", "redis://:***@host:6379/2"),
        ("rediss://user:pw@host/", "rediss://user:***@host/"),
        ("unix:///run/redis.sock?db=1&password=pw", "unix:///run/redis.sock?db=1&password=***"),
        ("redis://:p@ss@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:p@ss:w@rd@host/0", "redis://user:***@host/0"),
        ("redis://user:pa/ss@host/0", "redis://user:***@host/0"),
        ("redis://s3cret@host/0", "redis://***@host/0"),
        ("redis://u:p@ss@host/0?password=pw&db=1", "redis://u:***@host/0?password=***&db=1"),
        ("unix://u:p@ss@/run/redis.sock?db=1", "unix://u:***@/run/redis.sock?db=1"),
    ],
)
def test_redact_url_hides_only_the_password(url, shown):
    assert redact_url(url) == shown


def test_a_password_with_at_signs_is_never_shown(redis_server, tmp_path, caplog):
    """The server wants no password, so resc logs the URL when it starts (at info) and
    when it fails to connect (a warning): neither shows any part of the password."""
    caplog.set_level("INFO")
    url = f"redis://resc:first@second@third@127.0.0.1:{redis_server.port}/0"
    config = make_config(
        url, [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "out"}}]}]
    )

    with running(config, tmp_path):
        wait_until(lambda: "Redis unavailable" in caplog.text)
    with pytest.raises(StoreError) as info:
        Store(url).connect()

    shown = f"redis://resc:***@127.0.0.1:{redis_server.port}/0"
    assert shown in caplog.text
    assert str(info.value).startswith(f"connecting to {shown}: ")
    for part in ("first", "second", "third"):
        assert part not in caplog.text
        assert part not in str(info.value)


def test_db_number_in_the_url_is_used(r: redis.Redis, redis_server: RedisServer, tmp_path):
    url = redis_server.url.rsplit("/", 1)[0] + "/3"
    config = make_config(
        url, [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "out"}}]}]
    )
    db3 = redis.Redis(port=redis_server.port, db=3)
    try:
        with running(config, tmp_path):
            db3.lpush("in", "e")
            wait_until(lambda: db3.llen("out") == 1)
        assert r.exists("out") == 0  # nothing in db 0
    finally:
        db3.close()


def test_unix_socket_with_password_and_db(tmp_path: Path):
    socket = tmp_path / "redis.sock"
    server = RedisServer(
        tmp_path, "--unixsocket", str(socket), "--unixsocketperm", "700", password="pw"
    )
    server.start()
    try:
        url = f"unix://{socket}?db=2&password=pw"
        config = make_config(
            url, [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "out"}}]}]
        )
        client = redis.Redis(unix_socket_path=str(socket), password="pw", db=2)
        with running(config, tmp_path):
            client.lpush("in", "e")
            wait_until(lambda: client.llen("out") == 1)
        client.close()
    finally:
        server.kill()


def test_older_servers_path_brpoplpush_takes_events(redis_server, r, tmp_path):
    store = Store(redis_server.url)
    store.connect()
    store._has_lmove = False  # as on Redis < 6.2
    r.config_resetstat()
    r.lpush("in", "a", "b")
    assert store.wait_take("in", "in/taken") == b"a"
    assert r.lrange("in/taken", 0, -1) == [b"a"]
    stats = r.info("commandstats")
    assert stats["cmdstat_brpoplpush"]["calls"] == 1
    assert "cmdstat_blmove" not in stats
    store.close()


@pytest.mark.parametrize(
    "error",
    [
        redis.ReadOnlyError("You can't write against a read only replica."),
        redis.ResponseError("UNBLOCKED force unblock from blocking operation"),
        redis.ResponseError("LOADING Redis is loading the dataset in memory"),
        redis.ResponseError("MASTERDOWN Link with MASTER is down"),
        redis.ResponseError("NOREPLICAS Not enough good replicas to write."),
    ],
)
def test_a_server_that_is_no_writable_master_now_is_waited_out(error: Exception):
    expected = r"^taking: Redis is not a writable master now"
    with pytest.raises(RedisUnavailable, match=expected), converted_errors("taking"):
        raise error


def test_other_error_replies_are_refusals():
    with (
        pytest.raises(StoreError, match=r"^taking: ERR unknown command") as caught,
        converted_errors("taking"),
    ):
        raise redis.ResponseError("ERR unknown command")
    assert not isinstance(caught.value, RedisUnavailable)
