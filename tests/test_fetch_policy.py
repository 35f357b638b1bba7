"""The pure parts of fetching: building requests, retry waits, the circuit breaker's
states and picking objects out of an answer."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from resc.config.models import Fetch
from resc.core.errors import FetchError, MissingVariable
from resc.fetch.breaker import CircuitBreaker, CircuitOpen
from resc.fetch.client import Fetcher, pick
from resc.fetch.request import build_request, shown_url
from resc.fetch.retry import backoff_delay_s, retry_after_s, retryable_status
from tests.fetchers import KINDS, fetcher_of


def fetch_of(**fields: Any) -> Fetch:
    return Fetch.model_validate({"url": "http://svc/items", "returns": "db", **fields})


# --- requests -------------------------------------------------------------------------


def test_url_values_are_percent_encoded_but_not_literal_text() -> None:
    fetch = fetch_of(url="http://db/é/jobs/${id}?owner=${owner}&x=1")
    variables = {"id": b"a/b?c&d e", "owner": "Zürich".encode()}

    request = build_request(fetch, variables)

    assert request.url == "http://db/é/jobs/a%2Fb%3Fc%26d%20e?owner=Z%C3%BCrich&x=1"


def test_url_values_are_percent_encoded_and_environment_values_are_not(monkeypatch) -> None:
    monkeypatch.setenv("SVC", "https://svc.example:8443/api")
    fetch = fetch_of(url="${env.SVC}/items/${id}?q=${q}")

    request = build_request(fetch, {"id": b"a/b", "q": b"x&y=z"})

    assert request.url == "https://svc.example:8443/api/items/a%2Fb?q=x%26y%3Dz"
    assert request.shown == "GET ${env.SVC}/items/a%2Fb?q=x%26y%3Dz"
    assert shown_url(fetch, {"id": b"1", "q": b"2"}) == "${env.SVC}/items/1?q=2"


def test_missing_environment_variable_fails_before_any_request(monkeypatch) -> None:
    monkeypatch.delenv("RESC_NOT_SET", raising=False)
    fetch = fetch_of(headers={"Authorization": "Bearer ${env.RESC_NOT_SET}"})

    with pytest.raises(FetchError) as info:
        build_request(fetch, {})

    assert str(info.value) == (
        "GET http://svc/items: environment variable RESC_NOT_SET is not set "
        "(used as ${env.RESC_NOT_SET})"
    )


def test_missing_event_variable_in_the_url_is_a_missing_variable() -> None:
    with pytest.raises(MissingVariable) as info:
        build_request(fetch_of(url="http://svc/${id}"), {})
    assert info.value.name == "id"


@pytest.mark.parametrize("value", [b"1\r\nX-Admin: yes", b"s3cret\x00", b"s3cret ", b""])
def test_invalid_header_value_fails_without_showing_it(value: bytes) -> None:
    fetch = fetch_of(headers={"Authorization": "Bearer ${token}"})

    with pytest.raises(FetchError) as info:
        build_request(fetch, {"token": value})

    assert str(info.value) == (
        "GET http://svc/items: the value of header Authorization is not a valid header value "
        "(control characters, line breaks or spaces at either end)"
    )


def test_body_values_are_escaped_as_json_strings() -> None:
    fetch = fetch_of(method="POST", body='{"s": "${s}", "n": ${n}}')
    text = 'a "quoted"\\ line\nbreak, é, \x01'

    request = build_request(fetch, {"s": text.encode(), "n": b"12.5"})

    assert request.body is not None
    assert json.loads(request.body) == {"s": text, "n": 12.5}
    assert request.headers == {b"content-type": b"application/json"}
    assert request.method == "POST"


def test_body_value_cannot_add_fields_outside_quotes() -> None:
    fetch = fetch_of(method="POST", body='{"n": ${n}}')

    with pytest.raises(FetchError, match=r"^POST http://svc/items: the body is not JSON once"):
        build_request(fetch, {"n": b'1, "admin": true'})


def test_body_value_that_is_not_utf8_fails() -> None:
    fetch = fetch_of(method="POST", body='{"s": "${s}"}')

    with pytest.raises(FetchError, match=r"the value of \$\{s\} is not UTF-8 text$"):
        build_request(fetch, {"s": b"\xff"})


def test_content_type_given_in_headers_is_kept() -> None:
    fetch = fetch_of(method="POST", body="{}", headers={"Content-Type": "application/vnd+json"})

    assert build_request(fetch, {}).headers == {b"Content-Type": b"application/vnd+json"}


# --- retries --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retried"), [(429, True), (500, True), (503, True), (599, True), (404, False)]
)
def test_retryable_statuses(status: int, retried: bool) -> None:
    assert retryable_status(status) is retried


def test_backoff_doubles_up_to_the_cap_with_full_jitter() -> None:
    assert [backoff_delay_s(n, 0.5, rand=lambda: 1.0) for n in range(8)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        30.0,
        30.0,
    ]
    assert backoff_delay_s(3, 0.5, rand=lambda: 0.25) == 1.0
    assert backoff_delay_s(10_000, 0.5, rand=lambda: 1.0) == 30.0


NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("2", 2.0),
        (" 0 ", 0.0),
        ("86400", 60.0),  # capped
        ("Sun, 22 Nov 2026 12:00:30 GMT", 30.0),
        ("Sun, 22 Nov 2026 11:00:00 GMT", 0.0),  # in the past
        ("Mon, 23 Nov 2026 12:00:00 GMT", 60.0),
        ("soon", None),
        ("-5", None),
    ],
)
def test_retry_after_in_seconds_or_as_a_date(header: str | None, seconds: float | None) -> None:
    assert retry_after_s(header, now=NOW) == seconds


# --- circuit breaker ------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_at_the_threshold_and_lets_one_trial_through_after_the_cooldown():
    clock = Clock()
    breaker = CircuitBreaker("http://svc/${id}", failures=2, cooldown_s=30, clock=clock)

    assert breaker.admit() is False
    breaker.failed(trial=False, error="HTTP 500")
    assert breaker.admit() is False
    breaker.failed(trial=False, error="HTTP 500")
    with pytest.raises(CircuitOpen, match=r"^circuit open after 2 consecutive failures of "):
        breaker.admit()

    clock.now += 30
    assert breaker.admit() is True  # the trial
    with pytest.raises(CircuitOpen):
        breaker.admit()  # a second one waits for the trial's outcome
    breaker.answered(trial=True)
    assert breaker.admit() is False


def test_failed_trial_opens_the_circuit_for_another_cooldown():
    clock = Clock()
    breaker = CircuitBreaker("u", failures=1, cooldown_s=10, clock=clock)
    breaker.failed(trial=False, error="x")
    clock.now += 10
    assert breaker.admit() is True

    breaker.failed(trial=True, error="x")

    clock.now += 9.9
    with pytest.raises(CircuitOpen, match=r"after 2 consecutive failures of u"):
        breaker.admit()
    clock.now += 0.1
    assert breaker.admit() is True


def test_an_answer_resets_the_count_of_failures():
    breaker = CircuitBreaker("u", failures=2, cooldown_s=10, clock=Clock())
    breaker.failed(trial=False, error="x")
    breaker.answered(trial=False)
    breaker.failed(trial=False, error="x")

    assert breaker.admit() is False


def test_abandoned_trial_lets_the_next_fetch_be_the_trial():
    clock = Clock()
    breaker = CircuitBreaker("u", failures=1, cooldown_s=10, clock=clock)
    breaker.failed(trial=False, error="x")
    clock.now += 10
    assert breaker.admit() is True

    breaker.abandoned(trial=True)

    assert breaker.admit() is True


# --- answers --------------------------------------------------------------------------


def test_pick_walks_object_fields() -> None:
    answer = {"data": {"children": [{"a": 1}]}}

    assert pick(answer, "data.children") == [{"a": 1}]
    assert pick(answer, None) is answer


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"data": {}}, "path data.children: data has no field 'children'"),
        ({"other": 1}, "path data.children: the answer has no field 'data'"),
        ([{"data": 1}], "path data.children: the answer is not an object"),
        ({"data": [1]}, "path data.children: data is not an object"),
    ],
)
def test_pick_says_where_the_path_ends(answer: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        pick(answer, "data.children")
    assert str(info.value) == message


# --- the fetcher, over a stub transport --------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_request_that_cannot_be_made_does_not_count_against_the_circuit(kind: str) -> None:
    fetcher = fetcher_of(kind)  # its real transport refuses ftp:// before any connection
    fetch = fetch_of(url="ftp://svc/${id}", breaker={"failures": 1, "cooldown": 60})

    for _ in range(3):
        with pytest.raises(FetchError, match=r"^GET ftp://svc/1: UnsupportedProtocol: "):
            fetcher(fetch, {"id": b"1"})
    fetcher.close()


def test_connection_failures_open_the_circuit_without_further_requests() -> None:
    sent: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        sent.append(str(request.url))
        raise httpx.ConnectError("refused", request=request)

    fetcher = Fetcher(transport=httpx.MockTransport(refuse))
    fetch = fetch_of(retries=0, breaker={"failures": 2, "cooldown": 60})

    for _ in range(2):
        with pytest.raises(FetchError, match=r"^GET http://svc/items: ConnectError: refused$"):
            fetcher(fetch, {})
    with pytest.raises(CircuitOpen):
        fetcher(fetch, {})
    fetcher.close()

    assert sent == ["http://svc/items"] * 2


def test_a_reload_forgets_the_circuits_and_counts_of_fetches_gone() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    fetcher = Fetcher(transport=httpx.MockTransport(refuse))
    old = fetch_of(retries=0, breaker={"failures": 1, "cooldown": 60})
    with pytest.raises(FetchError):
        fetcher(old, {})
    with pytest.raises(CircuitOpen):
        fetcher(old, {})
    assert [(f, s.outcomes) for f, s in fetcher.stats()] == [
        (old, {"retryable_error": 1, "circuit_open": 1})
    ]
    new = fetch_of(retries=0, breaker={"failures": 1, "cooldown": 60})
    fetcher.keep_only([new])
    assert fetcher.stats() == []
    with pytest.raises(FetchError, match="ConnectError"):  # a closed circuit again
        fetcher(old, {})
    fetcher.close()
