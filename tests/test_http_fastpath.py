"""The fast paths (resc.server.fastpath) answer exactly as the app does: the same
requests, sent to a real server with them and to one without, give the same statuses,
bodies and content types, and leave Redis the same; and the requests that should take
a fast path do, while the others reach the app."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from resc.dev.embedded import free_port
from resc.server.listener import HttpListener
from resc.server.service import HttpService
from tests.conftest import RedisServer
from tests.test_http_api import _NoWatchers, config_for

TOKEN = "s3cret-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
LIMIT = 64


@contextlib.contextmanager
def serving(redis_url: str, tmp_path: Path, fast: bool) -> Iterator[tuple[httpx.Client, list[str]]]:
    """A server with or without its fast paths, and the paths of the requests that
    reached the app."""
    port = free_port()
    config = config_for(
        redis_url,
        tmp_path,
        max_body_bytes=LIMIT,
        produce=["in", "plain"],
        tokens={"produce": "T", "consume": "T"},
    )
    service = HttpService(config, f"127.0.0.1:{port}", _NoWatchers(), dict)
    fast_paths = service.listener.app
    app = fast_paths.app  # type: ignore[attr-defined]
    reached: list[str] = []

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            reached.append(scope["path"])
        await app(scope, receive, send)

    if fast:
        fast_paths.app = counting  # type: ignore[attr-defined]
    else:
        service.listener.close()  # never started: only its socket is closed
        service.listener = HttpListener(
            counting, f"127.0.0.1:{port}", on_close=service.api.store.aclose
        )
    service.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client, reached
    finally:
        service.close()


Case = tuple[str, str, Callable[[httpx.Client, redis.Redis, dict[str, str]], httpx.Response]]


def post(
    path: str, auth: bool = True, headers: dict[str, str] | None = None, **kwargs: Any
) -> Callable[..., httpx.Response]:
    def send(api: httpx.Client, r: redis.Redis, ids: dict[str, str]) -> httpx.Response:
        sent = {**(AUTH if auth else {}), **(headers or {})}
        if "chunks" in kwargs:  # a new iterator each time: sent chunked
            return api.post(path, headers=sent, content=iter(kwargs["chunks"]))
        return api.post(path.format(**ids), headers=sent, **kwargs)

    return send


def claim_saving(
    name: str, path: str = "/v1/queues/todo/promises"
) -> Callable[..., httpx.Response]:
    def send(api: httpx.Client, r: redis.Redis, ids: dict[str, str]) -> httpx.Response:
        answer = api.post(path, headers=AUTH)
        if answer.status_code == 200:
            ids[name] = answer.json()["id"]
        return answer

    return send


def push_task(task: str) -> Callable[..., httpx.Response]:
    def send(api: httpx.Client, r: redis.Redis, ids: dict[str, str]) -> httpx.Response:
        r.lpush("todo", task)
        r.zadd("todo-set", {task: 1})
        return api.get("/livez")

    return send


# (what, which takes it: fast or app, request)
CASES: list[Case] = [
    ("one event", "fast", post("/v1/queues/in/events", content="job/1")),
    ("a trailing line break", "fast", post("/v1/queues/in/events", content="job/2\n")),
    ("many events", "fast", post("/v1/queues/in/events", json=["job/3", "plain/4", "é"])),
    ("at the size limit", "fast", post("/v1/queues/in/events", content="j" * LIMIT)),
    ("over the size limit", "app", post("/v1/queues/in/events", content="j" * (LIMIT + 1))),
    ("chunked", "app", post("/v1/queues/in/events", chunks=[b"job/", b"5"])),
    ("empty", "app", post("/v1/queues/in/events", content="")),
    (
        "not JSON",
        "app",
        post("/v1/queues/in/events", content="[1,", headers={"content-type": "application/json"}),
    ),
    ("a JSON object", "app", post("/v1/queues/in/events", json={"a": 1})),
    ("an empty array", "app", post("/v1/queues/in/events", json=[])),
    ("not UTF-8", "app", post("/v1/queues/in/events", content=b"\xff\xfe")),
    ("an unknown queue", "app", post("/v1/queues/nope/events", content="x")),
    ("no token", "app", post("/v1/queues/in/events", content="x", auth=False)),
    (
        "a wrong token",
        "app",
        post("/v1/queues/in/events", content="x", headers={"authorization": "Bearer no"}),
    ),
    ("a wrong-typed queue", "fast", post("/v1/queues/plain/events", content="x")),
    ("claim from an empty queue", "fast", post("/v1/queues/todo/promises")),
    ("a task", "app", push_task("task/1")),
    ("claim", "fast", claim_saving("a")),
    ("done", "fast", post("/v1/queues/todo/promises/{a}/done")),
    ("done again", "fast", post("/v1/queues/todo/promises/{a}/done")),
    ("done, unknown", "fast", post("/v1/queues/todo/promises/" + "0" * 32 + "/done")),
    ("done, not an id", "app", post("/v1/queues/todo/promises/xyz/done")),
    ("done with a query", "app", post("/v1/queues/todo/promises/{a}/done?x=1")),
    ("another task", "app", push_task("task/2")),
    ("claim with a timeout", "fast", post("/v1/queues/todo/promises?timeout=2m&wait=0s")),
    ("claim, a bad timeout", "app", post("/v1/queues/todo/promises?timeout=soon")),
    ("claim, timeout 0 (made 1 ms)", "fast", post("/v1/queues/todo/promises?timeout=0s")),
    ("claim, twice the timeout", "app", post("/v1/queues/todo/promises?timeout=1s&timeout=2s")),
    ("claim, waiting", "app", post("/v1/queues/todo/promises?wait=100ms")),
    ("claim, a body", "app", post("/v1/queues/todo/promises", content="x")),
    ("claim, no token", "app", post("/v1/queues/todo/promises", auth=False)),
    ("claim, an unknown queue", "app", post("/v1/queues/nope/promises")),
    ("claim, a wrong-typed queue", "fast", post("/v1/queues/plain/promises")),
]


def normal(answer: httpx.Response) -> tuple[int, str | None, str]:
    """The answer with claim ids and deadlines (random, or the time) made constant."""
    body = re.sub(r"[0-9a-f]{32}", "ID", answer.text)
    body = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00", "TIME", body)
    return answer.status_code, answer.headers.get("content-type"), body


def run_cases(r: redis.Redis, url: str, tmp_path: Path, fast: bool) -> tuple[list[Any], Any]:
    r.flushall()
    r.set("plain", "a string")  # a key of the wrong type for a queue
    answers = []
    with serving(url, tmp_path, fast) as (api, reached):
        ids: dict[str, str] = {}
        for what, via, send in CASES:
            before = len(reached)
            answer = send(api, r, ids)
            took = "app" if len(reached) > before else "fast"
            answers.append((what, took if fast else via, normal(answer)))
    lists = {key: r.lrange(key, 0, -1) for key in sorted(r.keys()) if r.type(key) == b"list"}
    return answers, lists


@pytest.fixture
def with_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T", TOKEN)


def test_the_fast_paths_answer_as_the_app_does_and_take_only_their_requests(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path, with_token: None
):
    fast, fast_lists = run_cases(r, redis_server.url, tmp_path, fast=True)
    app, app_lists = run_cases(r, redis_server.url, tmp_path, fast=False)
    assert [(what, via) for what, via, _ in fast] == [(what, via) for what, via, _ in CASES]
    for (what, _, with_fast), (_, _, without) in zip(fast, app, strict=True):
        assert with_fast == without, what
    assert fast_lists == app_lists
    # The answers are those the API documents, not merely equal.
    statuses = {what: answer[0] for what, _, answer in fast}
    assert statuses["one event"] == statuses["many events"] == 202
    assert statuses["over the size limit"] == 413 and statuses["chunked"] == 202
    assert statuses["done"] == 200 and statuses["done again"] == 409
    assert statuses["a wrong-typed queue"] == statuses["claim, a wrong-typed queue"] == 409
    assert statuses["claim from an empty queue"] == 204
    assert fast_lists[b"in"] == [
        b"job/5",
        b"j" * LIMIT,
        "é".encode(),
        b"plain/4",
        b"job/3",
        b"job/2",
        b"job/1",
    ]
    assert fast_lists[b"global/events"] == [b"task/1"]  # the done queue
