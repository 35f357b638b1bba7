"""Events that cannot be processed land in the failed queue, byte for byte, with their
reason, while later events keep flowing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis

from resc.core.failures import FailedRecord, decode
from resc.dev.embedded import free_port
from tests.conftest import drained, make_config, running, wait_until
from tests.webservice import ScriptedService


def failing_config(url: str, *rules: dict[str, Any], seen_on: str = r"^ok/(?P<id>\d+)$"):
    """One watcher on `in`: first the rule that makes `seen/<id>` from the good events of
    run_failing (its regex `seen_on`), then `rules`."""
    seen = {"on": seen_on, "make": {"task": "seen/${id}", "queue": "seen"}}
    return make_config(url, [{"input_queue": "in", "rules": [seen, *rules]}])


def fetch_config(url: str, fetch_url: str, timeout_s: float = 10.0) -> dict[str, object]:
    fetch = {
        "url": fetch_url + "/${id}",
        "returns": "db",
        "timeout": timeout_s,
        "backoff": 0.01,  # retries in a blink
    }
    return failing_config(
        url,
        {
            "on": r"^fetch/(?P<id>\d+)$",
            "fetch": [fetch],
            "make": {"task": "got/${db.name}", "queue": "got"},
        },
        seen_on=r"^(?:fetch|ok)/(?P<id>\d+)$",
    )


def failed_records(
    r: redis.Redis, event: bytes | str, queue: str = "in/failed"
) -> list[FailedRecord]:
    """The records kept for the failed copies of `event`, oldest first."""
    return decode(r.hget(f"{queue}/reasons", event))


def failed_reason(r: redis.Redis, event: bytes | str, queue: str = "in/failed") -> bytes:
    """The reason of the one failed copy of `event`, failed at its first attempt just now."""
    (record,) = failed_records(r, event, queue)
    assert record.attempts == 1
    assert record.time_s is not None and abs(record.time_s - time.time()) < 60
    return record.reason.encode()


def run_failing(r: redis.Redis, config: dict[str, object], tmp_path: Path, bad: bytes) -> bytes:
    """Push a bad event between two good ones; return the reason recorded for it."""
    with running(config, tmp_path):
        r.lpush("in", "ok/1", bad, "ok/2")
        wait_until(lambda: r.llen("in/failed") == 1 and r.llen("seen") == 2)
        wait_until(lambda: drained(r, "in", "in/taken"))
    assert r.lrange("in/failed", 0, -1) == [bad]
    # Nothing of the failed event was pushed, not even by a rule that had no trouble.
    assert r.lrange("seen", 0, -1) == [b"seen/2", b"seen/1"]
    return failed_reason(r, bad)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (500, b"{}", b"HTTP 500"),
        (404, b"{}", b"HTTP 404"),
        (200, b"<html>not json</html>", b"bad response"),
        (200, b'{"truncated": ', b"bad response"),
        (200, b"[1, 2]", b"expected a JSON object or an array of objects"),
    ],
)
def test_web_service_errors_fail_the_event(
    r, redis_server, tmp_path, web: ScriptedService, status, body, expected
):
    web.answer("/7", body, status=status)
    reason = run_failing(r, fetch_config(redis_server.url, web.url), tmp_path, b"fetch/7")
    assert expected in reason
    assert r.lrange("got", 0, -1) == []


def test_unreachable_web_service_fails_the_event(r, redis_server, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    reason = run_failing(r, fetch_config(redis_server.url, dead), tmp_path, b"fetch/7")
    assert reason.startswith(f"GET {dead}/7: ConnectError".encode())


def test_web_service_timeout_fails_the_event(r, redis_server, tmp_path, web):
    web.answer("/7", {"name": "late"}, delay_s=2.0)
    config = fetch_config(redis_server.url, web.url, timeout_s=0.3)
    reason = run_failing(r, config, tmp_path, b"fetch/7")
    assert reason == f"GET {web.url}/7: no answer within 0.3 s (after 4 attempts)".encode()


def test_missing_fetched_field_fails_the_event(r, redis_server, tmp_path, web):
    web.answer("/7", {"other": "x"})
    reason = run_failing(r, fetch_config(redis_server.url, web.url), tmp_path, b"fetch/7")
    assert reason == b"variable ${db.name} has no value for this event"


def test_variable_without_value_fails_the_event(r, redis_server, tmp_path):
    config = failing_config(
        redis_server.url,
        {"on": r"^opt/(?P<a>\d+)(?:/(?P<b>\w+))?$", "make": {"task": "${a}-${b}", "queue": "seen"}},
    )
    reason = run_failing(r, config, tmp_path, b"opt/5")
    assert reason == b"variable ${b} has no value for this event"


def test_event_that_is_not_utf8_fails_unchanged(r, redis_server, tmp_path):
    config = failing_config(redis_server.url, {"on": "", "make": {"queue": "everything"}})
    bad = b"ok/\xff\xfe\x00binary"
    reason = run_failing(r, config, tmp_path, bad)
    assert reason.startswith(b"event is not UTF-8 text")
    assert r.lrange("everything", 0, -1) == [b"ok/2", b"ok/1"]


def test_todo_key_of_the_wrong_type_fails_only_the_events_using_it(r, redis_server, tmp_path):
    r.set("q/broken", "a string, not a list")
    config = make_config(
        redis_server.url,
        [
            {
                "input_queue": "in",
                "rules": [{"on": r"^(?P<q>\w+)/", "make": {"queue": "q/${q}", "set": "s/${q}"}}],
            }
        ],
    )
    with running(config, tmp_path):
        r.lpush("in", "good/1", "broken/1", "good/2")
        wait_until(lambda: r.llen("in/failed") == 1 and r.llen("q/good") == 2)
        wait_until(lambda: drained(r, "in", "in/taken"))
    assert r.lrange("in/failed", 0, -1) == [b"broken/1"]
    assert failed_reason(r, "broken/1") == b"key q/broken holds a string"
    # Nothing half-done: the failed event left no trace in its set.
    assert r.zrange("s/broken", 0, -1) == []
    assert r.lrange("q/good", 0, -1) == [b"good/2", b"good/1"]


def test_a_catastrophic_backtracking_regex_does_not_hang(r, redis_server, tmp_path):
    config = make_config(
        redis_server.url,
        [
            {
                "input_queue": "in",
                "rules": [
                    {"on": "^(a+)+$", "make": {"queue": "never"}},
                    {"on": "^(x+x+)+y$", "make": {"queue": "never"}},
                    {"on": "^done$", "make": {"queue": "done"}},
                ],
            }
        ],
    )
    with running(config, tmp_path):
        started = time.monotonic()
        r.lpush("in", "a" * 200_000 + "b", "x" * 200_000, "done")
        wait_until(lambda: r.llen("done") == 1, timeout_s=30)
        elapsed = time.monotonic() - started
    assert r.llen("never") == 0
    assert drained(r, "in", "in/taken", "in/failed")
    print(f"two pathological events of 200 kB handled in {elapsed:.3f} s")


def test_task_pushed_into_the_watchers_own_taken_queue_fails_the_event(r, redis_server, tmp_path):
    config = make_config(
        redis_server.url,
        [
            {
                "input_queue": "in",
                "rules": [
                    {"on": "^loop$", "make": {"queue": "in/taken"}},
                    {"on": "^ok$", "make": {"queue": "out"}},
                ],
            }
        ],
    )
    with running(config, tmp_path):
        r.lpush("in", "loop", "ok")
        wait_until(lambda: r.llen("out") == 1 and r.llen("in/failed") == 1)
        wait_until(lambda: drained(r, "in", "in/taken"))
    assert failed_reason(r, "loop") == (
        b"in/taken is one of the watcher's own keys, not a todo queue"
    )


def test_same_key_as_queue_and_set_fails_the_event(r, redis_server, tmp_path):
    config = make_config(
        redis_server.url,
        [{"input_queue": "in", "rules": [{"on": "^x", "make": {"queue": "k", "set": "k"}}]}],
    )
    with running(config, tmp_path):
        r.lpush("in", "x1")
        wait_until(lambda: r.llen("in/failed") == 1)
    assert failed_reason(r, "x1") == (b"k would be used both as a todo queue and as a set")
    assert not r.exists("k")
