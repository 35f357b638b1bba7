"""apply_rules: event -> results, with a stub in place of the web service."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from resc.config.models import Config, Fetch, Rule
from resc.core.errors import MissingVariable
from resc.engine.rules import Result, apply_rules
from resc.fetch.request import build_request

EXAMPLE = r"^acq/(?P<process_id>\w+)/(?P<product_id>\w+)$"


def rules_of(*rules: dict[str, Any]) -> list[Rule]:
    config = Config.model_validate(
        {
            "redis": {"url": "redis://127.0.0.1/"},
            "watchers": [{"input_queue": "global/events", "rules": list(rules)}],
        }
    )
    return config.watchers[0].rules


def no_fetch(fetch: Fetch, variables: Mapping[str, bytes]) -> list[dict[str, bytes]]:
    raise AssertionError(f"unexpected fetch of {fetch.url}")


class StubService:
    """Answers each URL (built by the daemon's own code) with canned objects, already
    flattened; records the calls."""

    def __init__(self, answers: dict[str, list[dict[str, bytes]]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str]] = []

    def __call__(self, fetch: Fetch, variables: Mapping[str, bytes]) -> list[dict[str, bytes]]:
        url = build_request(fetch, variables).url
        self.calls.append((fetch.returns, url))
        return self.answers[url]


def test_every_matching_rule_applies_in_config_order() -> None:
    rules = rules_of(
        {"name": "first", "on": "^acq/", "make": {"queue": "q1"}},
        {"name": "never", "on": "^trt/", "make": {"queue": "q2"}},
        {"name": "third", "on": "plantA", "make": {"task": "t/${input_task}", "queue": "q3"}},
    )

    assert apply_rules(rules, b"acq/plantA/1", no_fetch) == [
        Result(b"acq/plantA/1", b"q1", None, "first"),
        Result(b"t/acq/plantA/1", b"q3", None, "third"),
    ]


def test_event_matching_no_rule_gives_no_result() -> None:
    rules = rules_of({"on": "^acq/", "make": {"queue": "q"}})

    assert apply_rules(rules, b"trt/plantA/1", no_fetch) == []


def test_each_make_gives_one_result_with_expanded_patterns() -> None:
    rules = rules_of(
        {
            "on": EXAMPLE,
            "make": [
                {
                    "task": "trt/${process_id}/${product_id}",
                    "queue": "trt/${process_id}/todo-queue",
                    "set": "trt/${process_id}/todo-set",
                },
                {"queue": "global/to-propagate"},
            ],
        }
    )

    assert apply_rules(rules, "acq/Zürich/123".encode(), no_fetch) == [
        Result(
            "trt/Zürich/123".encode(),
            "trt/Zürich/todo-queue".encode(),
            "trt/Zürich/todo-set".encode(),
            "<anonymous rule>",
        ),
        Result("acq/Zürich/123".encode(), b"global/to-propagate", None, "<anonymous rule>"),
    ]


def test_fetch_rule_makes_one_result_per_object_per_make() -> None:
    rules = rules_of(
        {
            "name": "jobs",
            "on": r"^acq/(?P<plant>.+)/\d+$",
            "fetch": [
                {"url": "http://db/plants/${plant}/jobs?event=${input_task}", "returns": "db"}
            ],
            "make": [
                {"task": "${db.job}/${plant}", "queue": "q/${db.id}"},
                {"task": "${db.job}", "queue": "all"},
            ],
        }
    )
    url = "http://db/plants/a%20b%26c%3F%C3%A9/jobs?event=acq%2Fa%20b%26c%3F%C3%A9%2F1"
    objects = [{"db.job": b"j1", "db.id": b"1"}, {"db.job": b"j2", "db.id": b"2"}]
    service = StubService({url: objects})

    results = apply_rules(rules, "acq/a b&c?é/1".encode(), service)

    assert service.calls == [("db", url)]
    assert results == [
        Result("j1/a b&c?é".encode(), b"q/1", None, "jobs"),
        Result(b"j1", b"all", None, "jobs"),
        Result("j2/a b&c?é".encode(), b"q/2", None, "jobs"),
        Result(b"j2", b"all", None, "jobs"),
    ]


def test_each_fetch_makes_its_own_results_without_cross_product() -> None:
    rules = rules_of(
        {
            "name": "two services",
            "on": r"^acq/(?P<id>\d+)$",
            "fetch": [
                {"url": "http://a/${id}", "returns": "a"},
                {"url": "http://b/${id}", "returns": "b"},
            ],
            "make": {"queue": "q/${id}"},
        }
    )
    service = StubService(
        {"http://a/7": [{"a.x": b"1"}, {"a.x": b"2"}], "http://b/7": [{"b.y": b"3"}]}
    )

    results = apply_rules(rules, b"acq/7", service)

    assert service.calls == [("a", "http://a/7"), ("b", "http://b/7")]
    assert results == [Result(b"acq/7", b"q/7", None, "two services")] * 3


def test_fetch_answering_no_object_gives_no_result() -> None:
    rules = rules_of(
        {"on": "x", "fetch": [{"url": "http://a/", "returns": "a"}], "make": {"queue": "q"}}
    )

    assert apply_rules(rules, b"x", StubService({"http://a/": []})) == []


def test_optional_group_that_did_not_take_part_is_a_missing_variable() -> None:
    rules = rules_of(
        {"on": r"^acq/(?P<plant>\w+)(/(?P<product>\w+))?$", "make": {"queue": "q/${product}"}}
    )

    assert apply_rules(rules, b"acq/p/1", no_fetch) == [
        Result(b"acq/p/1", b"q/1", None, "<anonymous rule>")
    ]
    with pytest.raises(MissingVariable) as info:
        apply_rules(rules, b"acq/p", no_fetch)
    assert info.value.name == "product"


def test_missing_fetched_field_is_a_missing_variable() -> None:
    rules = rules_of(
        {"on": "x", "fetch": [{"url": "http://a/", "returns": "a"}], "make": {"queue": "${a.q}"}}
    )

    with pytest.raises(MissingVariable) as info:
        apply_rules(rules, b"x", StubService({"http://a/": [{"a.other": b"1"}]}))
    assert info.value.name == "a.q"
