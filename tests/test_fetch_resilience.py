"""Fetches against a real, misbehaving web service and a real Redis: retries, Retry-After,
timeouts, refused connections, the circuit breaker, POST bodies, headers from the
environment, `path`, `max_results`, the size cap and bad bodies. Each test checks the
exact queues, reasons and requests."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from resc.config.models import Fetch
from resc.core.errors import FetchStopped
from resc.core.failures import decode
from resc.dev.embedded import free_port
from tests.conftest import drained, make_config, running, wait_until
from tests.fetchers import KINDS, fetcher_of
from tests.webservice import Answer, ScriptedService, scripted_service


@pytest.fixture
def service() -> Iterator[ScriptedService]:
    with scripted_service() as web:
        yield web


def config_with(redis_url: str, fetch: dict[str, Any], **defaults: Any) -> dict[str, Any]:
    """One watcher on `in`: `ok/...` events go to `seen` without fetching; `fetch/<id>`
    events fetch (namespace db) and make `got/<id>/${db.name}` in `got`. Retries wait
    at most 10 ms unless told otherwise."""
    rules = [
        {"on": r"^ok/", "make": {"queue": "seen"}},
        {
            "on": r"^fetch/(?P<id>\d+)$",
            "fetch": [{"returns": "db", **fetch}],
            "make": {"task": "got/${id}/${db.name}", "queue": "got"},
        },
    ]
    return make_config(
        redis_url,
        [{"input_queue": "in", "rules": rules}],
        fetch_defaults={"backoff": 0.01, **defaults},
    )


def run(r: redis.Redis, config: dict[str, Any], tmp_path: Path, *events: str) -> None:
    """Run resc until `events`, pushed in this order, are all processed."""
    with running(config, tmp_path):
        r.lpush("in", *events)
        wait_until(lambda: drained(r, "in", "in/taken"))


def failed(r: redis.Redis) -> dict[str, str]:
    """The failed events and their reasons."""
    assert r.llen("in/failed") == r.hlen("in/failed/reasons")
    reasons = {}
    for event, value in r.hgetall("in/failed/reasons").items():
        (record,) = decode(value)
        reasons[event.decode()] = record.reason
    return reasons


def got(r: redis.Redis) -> list[bytes]:
    return r.lrange("got", 0, -1)[::-1]  # in the order pushed


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [rec for rec in caplog.records if text in rec.getMessage()]


# --- retries --------------------------------------------------------------------------


def test_500_then_200_makes_the_task_once_after_a_retry(r, redis_server, tmp_path, service):
    service.script("/items/1", Answer(status=500), Answer({"name": "bolt"}))

    run(
        r, config_with(redis_server.url, {"url": service.url + "/items/${id}"}), tmp_path, "fetch/1"
    )

    assert got(r) == [b"got/1/bolt"]
    assert failed(r) == {}
    assert len(service.requests_to("/items/1")) == 2


def test_429_waits_as_long_as_retry_after_says(r, redis_server, tmp_path, service):
    service.script(
        "/items/1", Answer(status=429, headers={"retry-after": "1"}), Answer({"name": "bolt"})
    )

    run(
        r, config_with(redis_server.url, {"url": service.url + "/items/${id}"}), tmp_path, "fetch/1"
    )

    assert got(r) == [b"got/1/bolt"]
    first, second = service.requests_to("/items/1")
    # The backoff alone would have waited 10 ms at most.
    assert 0.95 <= second.at - first.at < 3  # not the 30 s backoff cap nor 60 s


def test_answer_later_than_the_timeout_is_retried(r, redis_server, tmp_path, service):
    service.script("/items/1", Answer({"name": "late"}, delay_s=1.0), Answer({"name": "bolt"}))
    fetch = {"url": service.url + "/items/${id}", "timeout": 0.2}

    run(r, config_with(redis_server.url, fetch), tmp_path, "fetch/1")

    assert got(r) == [b"got/1/bolt"]
    first, second = service.requests_to("/items/1")
    # Retried after the timeout, before the late answer came. The server notes a request's
    # arrival a little after the client has sent it (and started its 0.2 s wait), by more
    # on a loaded machine: hence the lower bound below 0.2.
    assert 0.15 <= second.at - first.at < 0.95


def test_body_cut_off_by_the_server_is_retried(r, redis_server, tmp_path, service):
    service.script("/items/1", Answer({"name": "cut"}, cut_after=5), Answer({"name": "bolt"}))

    run(
        r, config_with(redis_server.url, {"url": service.url + "/items/${id}"}), tmp_path, "fetch/1"
    )

    assert got(r) == [b"got/1/bolt"]
    assert len(service.requests_to("/items/1")) == 2


def test_refused_connection_fails_the_event_after_every_attempt(r, redis_server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="resc.fetch")
    dead = f"http://127.0.0.1:{free_port()}"
    config = config_with(redis_server.url, {"url": dead + "/items/${id}", "retries": 2})

    run(r, config, tmp_path, "ok/1", "fetch/7", "ok/2")

    reason = failed(r)["fetch/7"]
    assert reason.startswith(f"GET {dead}/items/7: ConnectError: ")
    assert reason.endswith(" (after 3 attempts)")
    assert r.lrange("in/failed", 0, -1) == [b"fetch/7"]
    assert r.lrange("seen", 0, -1) == [b"ok/2", b"ok/1"]  # later events still flow
    assert len(messages(caplog, "fetch failed, retrying")) == 2


def test_404_fails_at_once_without_retry(r, redis_server, tmp_path, service):
    run(
        r, config_with(redis_server.url, {"url": service.url + "/items/${id}"}), tmp_path, "fetch/4"
    )

    assert failed(r) == {"fetch/4": f"GET {service.url}/items/4: HTTP 404 Not Found"}
    assert len(service.requests_to("/items/4")) == 1


def test_no_retries_means_one_request(r, redis_server, tmp_path, service):
    service.script("/items/1", Answer(status=503))
    config = config_with(redis_server.url, {"url": service.url + "/items/${id}", "retries": 0})

    run(r, config, tmp_path, "fetch/1")

    assert failed(r) == {"fetch/1": f"GET {service.url}/items/1: HTTP 503 Service Unavailable"}
    assert len(service.requests) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_stop_ends_the_wait_before_a_retry_at_once(service, kind):
    service.script("/x", Answer(status=503, headers={"retry-after": "30"}))
    fetch = Fetch.model_validate({"url": service.url + "/x", "returns": "db"})
    stop = threading.Event()
    fetcher = fetcher_of(kind, stop=stop)
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()

    with pytest.raises(FetchStopped) as info:
        fetcher(fetch, {})
    fetcher.close()

    assert time.monotonic() - started < 2
    assert str(info.value) == (
        f"GET {service.url}/x: HTTP 503 Service Unavailable; stopped while waiting to retry"
    )


# --- circuit breaker ------------------------------------------------------------------


def test_circuit_opens_after_consecutive_failures_and_closes_after_the_cooldown(
    r, redis_server, tmp_path, service, caplog
):
    caplog.set_level(logging.INFO, logger="resc.fetch")
    service.script("/items", Answer(status=500))
    fetch = {
        "url": service.url + "/items?id=${id}",
        "retries": 1,
        "breaker": {"failures": 2, "cooldown": 2.0},  # room for a slow machine
    }
    with running(config_with(redis_server.url, fetch), tmp_path):
        r.lpush("in", "fetch/1", "fetch/2", "fetch/3", "fetch/4")
        wait_until(lambda: drained(r, "in", "in/taken"))
        opened_at = time.monotonic()
        # The events after the second failure failed without a request.
        assert len(service.requests) == 4  # 2 events x 2 attempts
        reasons = failed(r)
        assert reasons["fetch/1"] == (
            f"GET {service.url}/items?id=1: HTTP 500 Internal Server Error (after 2 attempts)"
        )
        for event in ("fetch/3", "fetch/4"):
            assert re.fullmatch(
                rf"circuit open after 2 consecutive failures of "
                rf"{re.escape(service.url)}/items\?id=\$\{{id\}}, retrying after "
                rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}[+-]\d\d:\d\d",
                reasons[event],
            ), reasons[event]

        service.script("/items", Answer({"name": "back"}))
        time.sleep(max(0.0, opened_at + 2.1 - time.monotonic()))
        r.lpush("in", "fetch/5", "fetch/6")
        wait_until(lambda: r.llen("got") == 2)

    assert got(r) == [b"got/5/back", b"got/6/back"]
    assert len(service.requests) == 6
    assert r.lrange("in/failed", 0, -1)[::-1] == [b"fetch/1", b"fetch/2", b"fetch/3", b"fetch/4"]
    opened = messages(caplog, "circuit open:")
    closed = messages(caplog, "circuit closed")
    assert [rec.levelno for rec in opened] == [logging.WARNING]
    assert [rec.levelno for rec in closed] == [logging.INFO]


def test_answers_that_are_not_outages_do_not_open_the_circuit(r, redis_server, tmp_path, service):
    fetch = {"url": service.url + "/items/${id}", "breaker": {"failures": 1, "cooldown": 60}}
    service.script("/items/3", Answer({"name": "fine"}))

    run(r, config_with(redis_server.url, fetch), tmp_path, "fetch/1", "fetch/2", "fetch/3")

    assert set(failed(r)) == {"fetch/1", "fetch/2"}  # 404s: the service is up
    assert got(r) == [b"got/3/fine"]


# --- requests: POST bodies, headers, environment variables -----------------------------


def test_post_sends_the_body_expanded_as_json(r, redis_server, tmp_path, service):
    service.script("/search", Answer({"name": "found"}))
    body = '{"id": "${id}", "n": ${id}, "event": "${input_task}", "note": "${note}"}'
    rule = {
        "on": r"^post/(?P<id>\d+)/(?P<note>.*)$",
        "fetch": [
            {
                "url": service.url + "/search",
                "method": "POST",
                "body": body,
                "headers": {"X-Request-Id": "req-${id}"},
                "returns": "db",
            }
        ],
        "make": {"task": "got/${id}/${db.name}", "queue": "got"},
    }
    config = make_config(redis_server.url, [{"input_queue": "in", "rules": [rule]}])
    note = 'say "hi" \\ to Zürich\tnow'
    event = f"post/7/{note}"

    run(r, config, tmp_path, event)

    assert got(r) == [b"got/7/found"]
    (seen,) = service.requests
    assert seen.method == "POST"
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["x-request-id"] == "req-7"
    expected = (
        '{"id": "7", "n": 7, "event": "post/7/say \\"hi\\" \\\\ to Zürich\\tnow", '
        '"note": "say \\"hi\\" \\\\ to Zürich\\tnow"}'
    )
    assert seen.body == expected.encode()
    assert json.loads(seen.body) == {"id": "7", "n": 7, "event": event, "note": note}


def test_headers_and_url_read_environment_variables_at_request_time(
    r, redis_server, tmp_path, service, monkeypatch
):
    monkeypatch.setenv("RESC_TEST_TOKEN", "s3cret")
    monkeypatch.setenv("RESC_TEST_BASE", service.url)
    monkeypatch.delenv("RESC_TEST_UNSET", raising=False)
    service.script("/items/1", Answer({"name": "bolt"}))
    rules = [
        {
            "on": r"^auth/(?P<id>\d+)$",
            "fetch": [
                {
                    "url": "${env.RESC_TEST_BASE}/items/${id}",
                    "headers": {"Authorization": "Bearer ${env.RESC_TEST_TOKEN}"},
                    "returns": "db",
                }
            ],
            "make": {"task": "got/${id}/${db.name}", "queue": "got"},
        },
        {
            "on": r"^unset/(?P<id>\d+)$",
            "fetch": [
                {
                    "url": service.url + "/items/${id}",
                    "headers": {"Authorization": "Bearer ${env.RESC_TEST_UNSET}"},
                    "returns": "db",
                }
            ],
            "make": {"queue": "got"},
        },
    ]
    config = make_config(redis_server.url, [{"input_queue": "in", "rules": rules}])

    run(r, config, tmp_path, "auth/1", "unset/2", "auth/404")

    assert got(r) == [b"got/1/bolt"]
    assert [(s.path, s.headers["authorization"]) for s in service.requests] == [
        ("/items/1", "Bearer s3cret"),
        ("/items/404", "Bearer s3cret"),
    ]
    # Reasons name the variables, never their values.
    assert failed(r) == {
        "unset/2": f"GET {service.url}/items/2: environment variable RESC_TEST_UNSET is not "
        "set (used as ${env.RESC_TEST_UNSET})",
        "auth/404": "GET ${env.RESC_TEST_BASE}/items/404: HTTP 404 Not Found",
    }


# --- answers: path, max_results, size cap, bad bodies ----------------------------------


def test_path_picks_the_objects_out_of_a_wrapped_answer(r, redis_server, tmp_path, service):
    children = [{"name": "a"}, {"name": "b"}]
    service.script("/items/1", Answer({"data": {"children": children, "after": "t3"}}))
    service.script("/items/2", Answer({"data": {"after": None}}))
    config = config_with(
        redis_server.url, {"url": service.url + "/items/${id}", "path": "data.children"}
    )

    run(r, config, tmp_path, "fetch/1", "fetch/2")

    assert got(r) == [b"got/1/a", b"got/1/b"]
    assert failed(r) == {
        "fetch/2": f"GET {service.url}/items/2: bad response: path data.children: "
        "data has no field 'children'"
    }


def test_more_objects_than_max_results_fail_the_event(r, redis_server, tmp_path, service):
    service.script("/items/1", Answer([{"name": "a"}, {"name": "b"}]))
    service.script("/items/2", Answer([{"name": "a"}, {"name": "b"}, {"name": "c"}]))
    config = config_with(redis_server.url, {"url": service.url + "/items/${id}"}, max_results=2)

    run(r, config, tmp_path, "fetch/1", "fetch/2")

    assert got(r) == [b"got/1/a", b"got/1/b"]
    assert failed(r) == {
        "fetch/2": f"GET {service.url}/items/2: the answer has 3 objects, more than max_results (2)"
    }


def test_answers_over_the_size_cap_fail_with_or_without_content_length(
    r, redis_server, tmp_path, service
):
    big = [{"name": "x" * 50}] * 40
    size = len(Answer(big).body)
    assert size > 1000
    service.script("/items/1", Answer(big))
    service.script("/items/2", Answer(big, chunked=True))
    service.script("/items/3", Answer([{"name": "small"}], chunked=True))
    config = config_with(
        redis_server.url, {"url": service.url + "/items/${id}", "max_response_bytes": 1000}
    )

    run(r, config, tmp_path, "fetch/1", "fetch/2", "fetch/3")

    assert got(r) == [b"got/3/small"]
    assert failed(r) == {
        "fetch/1": f"GET {service.url}/items/1: the answer has {size} bytes, more than "
        "max_response_bytes (1000)",
        "fetch/2": f"GET {service.url}/items/2: the answer is larger than "
        "max_response_bytes (1000 bytes)",
    }
    assert len(service.requests) == 3  # not retried


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html><body>Bad gateway</body></html>", "bad response: Expecting value: line 1"),
        (b'[{"name": "trunc', "bad response: Unterminated string starting at: line 1"),
        (b"[" * 200_000 + b"]" * 200_000, "bad response: nested too deeply"),
    ],
    ids=["html", "truncated", "deep"],
)
def test_bodies_that_are_not_usable_json_fail_the_event(
    r, redis_server, tmp_path, service, body, reason
):
    service.script("/items/1", Answer(body))

    run(
        r, config_with(redis_server.url, {"url": service.url + "/items/${id}"}), tmp_path, "fetch/1"
    )

    assert failed(r)["fetch/1"].startswith(f"GET {service.url}/items/1: {reason}")
    assert len(service.requests) == 1


def test_huge_numbers_are_kept_exactly(r, redis_server, tmp_path, service):
    digits = "1234567890" * 40
    service.script("/items/1", Answer(f'{{"name": {digits}}}'.encode()))
    service.script("/items/2", Answer(b'{"name": 1e999999}'))

    run(
        r,
        config_with(redis_server.url, {"url": service.url + "/items/${id}"}),
        tmp_path,
        "fetch/1",
        "fetch/2",
    )

    assert got(r) == [f"got/1/{digits}".encode(), b"got/2/1e999999"]
