"""Requests generated from /openapi.json (schemathesis, a small bounded run) against the
real server: no 5xx, and every answer as the document says."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import redis
import schemathesis

from resc.dev.embedded import free_port
from resc.server.service import HttpService, NoWatchers
from tests.conftest import RedisServer
from tests.test_http_api import config_for


@pytest.fixture
def api_schema(r: redis.Redis, redis_server: RedisServer, tmp_path: Path) -> Iterator[Any]:
    r.lpush("todo", *[f"task/{n}" for n in range(20)])
    port = free_port()
    service = HttpService(config_for(redis_server.url, tmp_path), f"127.0.0.1:{port}", NoWatchers())
    service.start()
    try:
        yield schemathesis.openapi.from_url(f"http://127.0.0.1:{port}/openapi.json")
    finally:
        service.close()


def test_the_api_answers_as_its_openapi_document_says(api_schema: Any) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 9
    for operation in operations:

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=20,
            deadline=None,
            suppress_health_check=list(hypothesis.HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: Any) -> None:
            case.call_and_validate()

        check()
