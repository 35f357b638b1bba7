"""The config of fetches: defaults, `fetch_defaults`, and located errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from resc.config.load import load_config
from resc.config.models import Fetch
from tests.test_config import BODY, RULE, problems_of, write, write_rule

# Two fetches under `fetch_defaults` (line 3); the first sets nothing, the second sets
# retries and one field of its breaker (line 15).
WITH_DEFAULTS = """
{
  redis: { url: "redis://127.0.0.1/" }
  fetch_defaults: %s
  watchers: [
    {
      input_queue: in
      rules: [
        {
          on: "^x/(?P<id>\\\\d+)$"
          fetch: [
            { url: "http://a/${id}", returns: "a" }
            {
              url: "http://b/${id}"
              returns: "b"
              retries: 0
              breaker: { failures: 9 }
            }
          ]
          make: { queue: "q" }
        }
      ]
    }
  ]
}
"""


def fetches_of(path: Path) -> list[Fetch]:
    return list(load_config(path).watchers[0].rules[0].fetch)


def settings(fetch: Fetch) -> dict[str, object]:
    return fetch.model_dump(
        include={"timeout", "retries", "backoff", "max_results", "max_response_bytes", "breaker"}
    )


def test_fetch_defaults_without_fetch_defaults(tmp_path: Path) -> None:
    path = write_rule(
        tmp_path,
        """
        on: "x"
        fetch: [ { url: "http://a/", returns: "a" } ]
        make: { queue: "q" }
        """,
    )

    (fetch,) = fetches_of(path)

    assert settings(fetch) == {
        "timeout": 10.0,
        "retries": 3,
        "backoff": 0.5,
        "max_results": 10_000,
        "max_response_bytes": 10 * 1024 * 1024,
        "breaker": {"failures": 5, "cooldown": 30.0},
    }
    assert (fetch.method, fetch.headers, fetch.body, fetch.path) == ("GET", {}, None, None)


def test_fetch_defaults_apply_to_every_fetch_that_does_not_set_them(tmp_path: Path) -> None:
    defaults = "{ timeout: 2, retries: 5, backoff: 0.1, breaker: { failures: 3, cooldown: 7 } }"
    path = write(tmp_path, WITH_DEFAULTS % defaults)

    first, second = fetches_of(path)

    assert settings(first) == {
        "timeout": 2.0,
        "retries": 5,
        "backoff": 0.1,
        "max_results": 10_000,
        "max_response_bytes": 10 * 1024 * 1024,
        "breaker": {"failures": 3, "cooldown": 7.0},
    }
    # Its own retries and breaker.failures win; the rest comes from fetch_defaults.
    assert settings(second) == {
        **settings(first),
        "retries": 0,
        "breaker": {"failures": 9, "cooldown": 7.0},
    }


def test_bad_fetch_defaults_are_reported_once_where_they_are(tmp_path: Path) -> None:
    path = write(tmp_path, WITH_DEFAULTS % "{ retries: -1, breaker: { cooldown: 0 } }")

    assert problems_of(path) == [
        f"{path}:3: fetch_defaults.retries: Input should be greater than or equal to 0",
        f"{path}:3: fetch_defaults.breaker.cooldown: Input should be greater than 0",
    ]


def test_fetch_defaults_cannot_set_what_only_a_fetch_has(tmp_path: Path) -> None:
    path = write(tmp_path, WITH_DEFAULTS % '{ url: "http://x/" }')

    assert problems_of(path) == [f"{path}:3: fetch_defaults.url: unknown field"]


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("retries: -1", "retries: Input should be greater than or equal to 0"),
        ("timeout: 0", "timeout: Input should be greater than 0"),
        ("backoff: -0.5", "backoff: Input should be greater than or equal to 0"),
        ("max_results: 0", "max_results: Input should be greater than or equal to 1"),
        ("max_response_bytes: 0", "max_response_bytes: Input should be greater than or equal to 1"),
        (
            "breaker: { failures: 0 }",
            "breaker.failures: Input should be greater than or equal to 1",
        ),
        ("breaker: { open: 1 }", "breaker.open: unknown field"),
        ("method: PUT", "method: Input should be 'GET' or 'POST'"),
        ('body: "{}"', "body: a body needs method: POST"),
        (
            "path: data..children",
            "path: must be field names separated by dots, as in data.children",
        ),
        ('headers: { "X Id": "1" }', "headers: 'X Id' is not an HTTP header name"),
        ("headers: { X-Id: 1 }", "headers.X-Id: must be a string, not a number"),
    ],
)
def test_bad_fetch_values_are_located(tmp_path: Path, field: str, message: str) -> None:
    path = write_rule(
        tmp_path,
        f"""
        on: "x"
        fetch: [
          {{
            url: "http://a/"
            returns: a
            {field}
          }}
        ]
        make: {{ queue: "q" }}
        """,
    )

    assert problems_of(path) == [f"{path}:{BODY + 5}: {RULE}.fetch[0].{message}"]


def test_post_body_must_be_json_at_start(tmp_path: Path) -> None:
    path = write_rule(
        tmp_path,
        """
        on: "^x/(?P<id>\\\\d+)$"
        fetch: [
          {
            url: "http://a/"
            returns: a
            method: POST
            body: '''{"id": "${id}" "n": ${id}}'''
          }
        ]
        make: { queue: "q" }
        """,
    )

    assert problems_of(path) == [
        f"{path}:{BODY + 6}: {RULE}.fetch[0].body: is not JSON (each ${{name}} taken as a "
        "number): Expecting ',' delimiter: line 1 column 16 (char 15)"
    ]


def test_environment_variables_are_allowed_in_url_headers_and_body_only(tmp_path: Path) -> None:
    path = write_rule(
        tmp_path,
        """
        on: "^x/(?P<id>\\\\d+)$"
        fetch: [
          {
            url: "${env.BASE}/items/${id}"
            returns: db
            method: POST
            headers: { Authorization: "Bearer ${env.TOKEN}" }
            body: '''{"key": "${env.KEY}", "id": ${id}, "bad": "${env.a.b}"}'''
          }
        ]
        make: { queue: "q/${env.BASE}/${db.x}" }
        """,
    )

    assert problems_of(path) == [
        f"{path}:{BODY + 7}: {RULE}.fetch[0].body: ${{env.a.b}} is not a variable of this "
        "rule; it has: input_task, id, env.NAME",
        f"{path}:{BODY + 10}: {RULE}.make.queue: ${{env.BASE}} is not a variable of this rule; "
        "it has: input_task, id, db.*",
    ]


def test_fetch_patterns_may_use_only_the_rules_own_variables(tmp_path: Path) -> None:
    path = write_rule(
        tmp_path,
        """
        on: "x"
        fetch: [
          {
            url: "http://a/"
            returns: a
            headers: { X-Trace: "${trace}" }
          }
        ]
        make: { queue: "q" }
        """,
    )

    assert problems_of(path) == [
        f"{path}:{BODY + 5}: {RULE}.fetch[0].headers.X-Trace: ${{trace}} is not a variable of "
        "this rule; it has: input_task, env.NAME"
    ]


def test_max_connections_defaults_to_concurrency_and_is_bounded(tmp_path: Path) -> None:
    text = """
    redis: {{ url: "redis://127.0.0.1:6379" }}
    watchers: [
      {{
        input_queue: in
        concurrency: 16
        {field}
        rules: [ {{ on: "x", make: {{ queue: "q" }} }} ]
      }}
    ]
    """
    config = load_config(write(tmp_path, text.format(field="")))
    assert config.watchers[0].max_connections is None  # as many as concurrency
    config = load_config(write(tmp_path, text.format(field="max_connections: 4")))
    assert config.watchers[0].max_connections == 4

    path = write(tmp_path, text.format(field="max_connections: 0"))
    assert problems_of(path) == [
        f"{path}:6: watchers[0].max_connections: Input should be greater than or equal to 1"
    ]
