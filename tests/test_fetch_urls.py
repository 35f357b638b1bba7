"""Where a fetch's request goes, against real HTTP servers: values that look like dot
segments stay in their segment, and redirects never take the configured headers to
another origin."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from resc.config.models import Fetch
from resc.core.errors import FetchError
from resc.fetch.client import MAX_REDIRECTS, Fetcher
from tests.fetchers import KINDS, OnLoop, fetcher_of
from tests.webservice import Answer, ScriptedService, scripted_service


@pytest.fixture
def service() -> Iterator[ScriptedService]:
    with scripted_service() as web:
        yield web


@pytest.fixture
def elsewhere() -> Iterator[ScriptedService]:
    """A second service, on another port: another origin."""
    with scripted_service() as web:
        yield web


@pytest.fixture(params=KINDS)
def fetcher(request: pytest.FixtureRequest) -> Iterator[Fetcher | OnLoop]:
    fetcher = fetcher_of(request.param)
    yield fetcher
    fetcher.close()


def fetch_of(url: str, **fields: Any) -> Fetch:
    return Fetch.model_validate({"url": url, "returns": "db", "retries": 0, **fields})


# --- dot segments ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "path"),
    [
        (b"..", "/items/%2E%2E/details"),
        (b".", "/items/%2E/details"),
        (b"...", "/items/%2E%2E%2E/details"),
        (b"a.b", "/items/a.b/details"),
    ],
)
def test_a_value_of_dots_stays_in_its_path_segment(service, fetcher, value, path):
    service.answer("/admin/details", {"name": "the wrong endpoint"})
    service.answer("/details", {"name": "the wrong endpoint"})
    service.answer("/items/details", {"name": "the wrong endpoint"})
    service.answer(path, {"name": "right"})

    objects = fetcher(fetch_of(service.url + "/items/${id}/details"), {"id": value})

    assert service.paths == [path]
    assert objects == [{"db.name": b"right"}]


def test_values_of_dots_side_by_side_make_no_dot_segment(service, fetcher):
    service.answer("/a/%2E%2E/b", {"name": "right"})

    fetcher(fetch_of(service.url + "/a/${x}${y}/b"), {"x": b".", "y": b"."})

    assert service.paths == ["/a/%2E%2E/b"]


def test_a_value_of_dots_in_the_query_is_encoded_and_kept(service, fetcher):
    service.answer("/items", {"name": "right"})

    fetcher(fetch_of(service.url + "/items?dir=${d}"), {"d": b".."})

    assert service.paths == ["/items?dir=%2E%2E"]


# --- redirects ------------------------------------------------------------------------


def redirect(to: str, status: int = 302) -> Answer:
    return Answer(b"", status=status, headers={"location": to})


def test_a_redirect_on_the_same_origin_is_followed_with_the_headers(service, fetcher):
    service.script("/old", redirect("/new"))
    service.answer("/new", {"name": "bolt"})
    fetch = fetch_of(service.url + "/old", headers={"X-Api-Key": "k3y"})

    assert fetcher(fetch, {}) == [{"db.name": b"bolt"}]

    assert service.paths == ["/old", "/new"]
    assert [seen.headers["x-api-key"] for seen in service.requests] == ["k3y", "k3y"]


def test_a_redirect_to_another_origin_fails_without_sending_the_headers_there(
    service, elsewhere, fetcher, monkeypatch
):
    monkeypatch.setenv("RESC_TEST_TOKEN", "s3cret")
    elsewhere.answer("/steal", {"name": "bolt"})
    service.script("/items", redirect(elsewhere.url + "/steal?from=resc", status=307))
    fetch = fetch_of(
        service.url + "/items",
        headers={"X-Api-Key": "${env.RESC_TEST_TOKEN}", "Authorization": "Bearer t0ken"},
    )

    with pytest.raises(FetchError) as info:
        fetcher(fetch, {})

    assert str(info.value) == (
        f"GET {service.url}/items: HTTP 307 redirects to another origin ({elsewhere.url}): "
        f"not followed, so that the fetch's headers are not sent there"
    )
    assert elsewhere.requests == []
    assert service.paths == ["/items"]


def test_a_redirect_to_the_same_host_on_another_port_is_another_origin(service, elsewhere, fetcher):
    # Both servers listen on 127.0.0.1: only the port differs.
    service.script("/items", redirect(elsewhere.url.replace("127.0.0.1", "localhost") + "/x"))

    with pytest.raises(FetchError, match="redirects to another origin"):
        fetcher(fetch_of(service.url + "/items"), {})

    assert elsewhere.requests == []


def test_endless_redirects_fail_the_fetch(service, fetcher):
    service.script("/loop", redirect("/loop"))

    with pytest.raises(FetchError) as info:
        fetcher(fetch_of(service.url + "/loop"), {})

    assert str(info.value) == f"GET {service.url}/loop: more than {MAX_REDIRECTS} redirects"
    assert len(service.requests) == MAX_REDIRECTS + 1
