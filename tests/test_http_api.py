"""The queue API against a real Redis and the real server (uvicorn on a free port):
events produced and turned into tasks by a running daemon, promises claimed, done,
failed, retried, extended and put back at their deadline, tokens, hostile input."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from resc.config.load import config_from_source
from resc.config.source import read_source
from resc.core.failures import decode
from resc.dev.embedded import free_port
from resc.server.service import HttpService
from tests.conftest import RedisServer, make_config, running, wait_until, write_config

RULES = [
    {
        "input_queue": "in",
        "rules": [
            {
                "on": r"^job/(?P<n>\d+)$",
                "make": {"task": "task/${n}", "queue": "todo", "set": "todo-set"},
            },
            {"on": r"^plain/(?P<n>\d+)$", "make": {"task": "${n}", "queue": "plain"}},
            {"on": r"^x/(?P<q>\w+)$", "make": {"queue": "per/${q}"}},
        ],
    }
]
ID = "0" * 32


def config_for(redis_url: str, tmp_path: Path, **http: Any) -> Any:
    raw = make_config(redis_url, RULES, http={"listen": "127.0.0.1:0", **http})
    return config_from_source(read_source(write_config(tmp_path, raw, "api.json")))


@contextlib.contextmanager
def serving(
    redis_url: str, tmp_path: Path, reap_interval_s: float = 0.05, **http: Any
) -> Iterator[httpx.Client]:
    """The HTTP server of `http` on a free port, without watchers."""
    port = free_port()
    service = HttpService(
        config_for(redis_url, tmp_path, **http),
        f"127.0.0.1:{port}",
        _NoWatchers(),
        dict,
        reap_interval_s=reap_interval_s,
    )
    service.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        service.close()


class _NoWatchers:
    def watchers(self) -> list[Any]:
        return []

    def queue_lengths(self) -> list[tuple[str, str, int]]:
        return []

    def instances(self) -> list[tuple[str, str, str]]:
        return []


@pytest.fixture
def api(r: redis.Redis, redis_server: RedisServer, tmp_path: Path) -> Iterator[httpx.Client]:
    with serving(redis_server.url, tmp_path) as client:
        yield client


def claim(api: httpx.Client, queue: str = "todo", **params: str) -> dict[str, Any]:
    answer = api.post(f"/v1/queues/{queue}/promises", params=params)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_events_produced_one_and_many_become_tasks(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
):
    config = make_config(redis_server.url, RULES)
    with running(config, tmp_path), serving(redis_server.url, tmp_path) as api:
        one = api.post(
            "/v1/queues/in/events", content="job/1", headers={"content-type": "text/plain"}
        )
        assert (one.status_code, one.json()) == (202, {"queued": 1})
        many = api.post("/v1/queues/in/events", json=["job/2", "job/3", "job/2", "plain/4"])
        assert (many.status_code, many.json()) == (202, {"queued": 4})
        wait_until(lambda: r.llen("todo") == 3 and r.llen("plain") == 1)
        assert r.lrange("todo", 0, -1) == [b"task/3", b"task/2", b"task/1"]
        assert api.get("/v1/queues/in").json() == {
            "queue": "in",
            "produce": True,
            "consume": False,
            "length": 0,
            "claims": None,
            "failed": None,
            "set": None,
            "delayed": None,
            "next_due": None,
        }


def test_claim_then_done_notifies_once_and_forgets_the_claim(r: redis.Redis, api: httpx.Client):
    r.lpush("todo", "task/1")
    r.zadd("todo-set", {"task/1": 1})
    promise = claim(api, timeout="30s")
    assert promise["task"] == "task/1"
    assert promise["queue"] == "todo"
    assert promise["attempt"] == 1
    assert r.zcard("todo-set") == 0  # zrem before: a new event may make it again
    assert r.hlen("todo/claims") == 1
    done = api.post(f"/v1/queues/todo/promises/{promise['id']}/done")
    assert (done.status_code, done.json()) == (200, {"id": promise["id"], "outcome": "done"})
    assert r.lrange("global/events", 0, -1) == [b"task/1"]
    assert r.hlen("todo/claims") == 0
    assert r.zcard("todo/claims/deadlines") == 0
    again = api.post(f"/v1/queues/todo/promises/{promise['id']}/done")
    assert again.status_code == 409
    assert again.json() == {"error": f"no claim {promise['id']} on 'todo': unknown, or finished"}
    assert r.lrange("global/events", 0, -1) == [b"task/1"]


def test_claim_then_fail_keeps_the_reason_in_the_failed_list(r: redis.Redis, api: httpx.Client):
    r.lpush("todo", "task/1")
    promise = claim(api)
    answer = api.post(
        f"/v1/queues/todo/promises/{promise['id']}/fail", json={"reason": "disk full"}
    )
    assert answer.json() == {"id": promise["id"], "outcome": "failed"}
    assert r.lrange("todo/failed", 0, -1) == [b"task/1"]
    [record] = decode(r.hget("todo/failed/reasons", "task/1"))
    assert (record.reason, record.attempts) == ("disk full", 1)
    assert abs(record.time_s - time.time()) < 10  # type: ignore[operator]
    assert r.llen("global/events") == 0
    assert api.post(f"/v1/queues/todo/promises/{promise['id']}/fail").status_code == 409
    assert r.llen("todo/failed") == 1


def test_a_retry_with_a_delay_reappears_after_it_and_not_before(r: redis.Redis, api: httpx.Client):
    r.lpush("todo", "task/1")
    r.zadd("todo-set", {"task/1": 1})
    promise = claim(api)
    answer = api.post(f"/v1/queues/todo/promises/{promise['id']}/retry", params={"delay": "1500ms"})
    assert answer.json() == {"id": promise["id"], "outcome": "retry scheduled"}
    started = time.monotonic()
    assert api.post(f"/v1/queues/todo/promises/{promise['id']}/done").status_code == 409
    wait_until(lambda: r.llen("todo") == 1)
    assert time.monotonic() - started >= 1.3
    assert r.zscore("todo-set", "task/1") is not None  # queued again: in its set again
    again = claim(api)
    assert (again["task"], again["attempt"]) == ("task/1", 2)
    assert r.llen("global/events") == 0


def test_a_retry_now_puts_it_back_once_even_when_a_copy_was_queued_meanwhile(
    r: redis.Redis, api: httpx.Client
):
    r.lpush("todo", "task/1")
    r.zadd("todo-set", {"task/1": 1})
    promise = claim(api)
    r.lpush("todo", "task/1")  # made again while claimed (zrem before)
    r.zadd("todo-set", {"task/1": 2})
    answer = api.post(f"/v1/queues/todo/promises/{promise['id']}/retry")
    assert answer.json() == {"id": promise["id"], "outcome": "retried"}
    assert r.lrange("todo", 0, -1) == [b"task/1"]
    assert r.hlen("todo/claims") == 0


def test_extend_moves_the_deadline(r: redis.Redis, api: httpx.Client):
    r.lpush("todo", "task/1")
    promise = claim(api, timeout="1s")
    answer = api.post(f"/v1/queues/todo/promises/{promise['id']}/extend", params={"timeout": "1m"})
    assert answer.status_code == 200
    assert answer.json()["deadline"] > promise["deadline"]
    time.sleep(1.3)
    assert r.llen("todo") == 0
    assert api.post(f"/v1/queues/todo/promises/{promise['id']}/done").status_code == 200


def test_a_claim_past_its_deadline_reappears_exactly_once_with_two_servers(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
):
    r.lpush("todo", *[f"task/{n}" for n in range(50)])
    with (
        serving(redis_server.url, tmp_path, reap_interval_s=0.01) as one,
        serving(redis_server.url, tmp_path, reap_interval_s=0.01) as two,
    ):
        promises = [claim(one if n % 2 else two, timeout="4s") for n in range(50)]
        assert r.llen("todo") == 0
        wait_until(lambda: r.llen("todo") == 50)
        time.sleep(0.3)
        assert sorted(r.lrange("todo", 0, -1)) == sorted(f"task/{n}".encode() for n in range(50))
        assert r.hlen("todo/claims") == 0
        late = one.post(f"/v1/queues/todo/promises/{promises[0]['id']}/done")
        assert late.status_code == 409
    assert r.llen("global/events") == 0


def test_a_claim_outlives_a_restart_of_resc(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
):
    r.lpush("todo", "task/1")
    with serving(redis_server.url, tmp_path) as api:
        promise = claim(api)
    with serving(redis_server.url, tmp_path) as api:
        answer = api.post(f"/v1/queues/todo/promises/{promise['id']}/done")
        assert answer.status_code == 200
    assert r.lrange("global/events", 0, -1) == [b"task/1"]


def test_an_expired_claim_cannot_be_done_even_before_the_reaper_runs(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
):
    r.lpush("todo", "task/1")
    with serving(redis_server.url, tmp_path, reap_interval_s=3600) as api:
        promise = claim(api, timeout="1ms")
        time.sleep(0.05)
        answer = api.post(f"/v1/queues/todo/promises/{promise['id']}/done")
        assert answer.status_code == 409
        assert "its deadline passed" in answer.json()["error"]
    assert r.llen("global/events") == 0


def test_an_empty_queue_answers_204_after_the_wait(api: httpx.Client):
    started = time.monotonic()
    answer = api.post("/v1/queues/todo/promises", params={"wait": "500ms"})
    assert answer.status_code == 204
    assert 0.45 <= time.monotonic() - started < 3


def test_a_waiting_claim_gets_a_task_pushed_meanwhile(r: redis.Redis, api: httpx.Client):
    threading.Timer(0.3, lambda: r.lpush("todo", "task/9")).start()
    assert claim(api, wait="5s")["task"] == "task/9"


def test_zrem_after_keeps_the_set_entry_until_done(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
):
    r.lpush("todo", "task/1")
    r.zadd("todo-set", {"task/1": 1})
    with serving(redis_server.url, tmp_path, zrem="after", done_queue=None) as api:
        promise = claim(api)
        assert r.zcard("todo-set") == 1
        assert api.post(f"/v1/queues/todo/promises/{promise['id']}/done").status_code == 200
    assert r.zcard("todo-set") == 0
    assert r.exists("global/events") == 0


def test_the_queue_info_counts_queued_claimed_and_failed(r: redis.Redis, api: httpx.Client):
    r.lpush("todo", "a", "b", "c")
    r.zadd("todo-set", {"a": 1, "b": 1, "c": 1})
    api.post(f"/v1/queues/todo/promises/{claim(api)['id']}/fail")
    claim(api)
    assert api.get("/v1/queues/todo").json() == {
        "queue": "todo",
        "produce": False,
        "consume": True,
        "length": 1,
        "claims": 1,
        "failed": 1,
        "set": 1,
        "delayed": 0,
        "next_due": None,
    }


def test_the_queue_info_counts_delayed_tasks_and_says_when_the_first_is_due(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
):
    watchers = [
        {"input_queue": "in", "rules": [{"on": "^d", "make": {"queue": "todo", "delay": "1h"}}]}
    ]
    with running(make_config(redis_server.url, watchers), tmp_path):
        r.lpush("in", "d1", "d2")
        wait_until(lambda: r.zcard("todo/delayed") == 2)
    first_ms = r.zrange("todo/delayed", 0, 0, withscores=True)[0][1]
    with serving(redis_server.url, tmp_path) as api:
        info = api.get("/v1/queues/todo").json()
    assert (info["length"], info["delayed"]) == (0, 2)
    due = datetime.fromisoformat(info["next_due"])
    assert abs(due.timestamp() - first_ms / 1000) < 0.001
    assert 3590 < due.timestamp() - time.time() <= 3600


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/v1/queues/out/events"),
        ("post", "/v1/queues/todo/events"),
        ("post", "/v1/queues/..%2Fin/events"),
        ("post", "/v1/queues/*/events"),
        ("post", "/v1/queues/per/${q}/promises"),
        ("post", "/v1/queues/in/promises"),
        ("get", "/v1/queues/*"),
        ("post", f"/v1/queues/nope/promises/{ID}/done"),
    ],
)
def test_a_queue_outside_the_allowed_ones_is_404(api: httpx.Client, method: str, path: str):
    answer = api.request(method, path, content=b"x")
    assert answer.status_code == 404
    assert list(answer.json()) == ["error"]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error"),
    [
        (b"", "text/plain", 400, "the body is empty: send one event as text or a JSON array"),
        (b"\xff\xfe\x00", "application/octet-stream", 400, "the body is not UTF-8 text"),
        (b"{", "application/json", 400, "the body is not JSON: send a JSON array of strings"),
        (
            b'{"a": 1}',
            "application/json",
            400,
            "a JSON body must be an array of strings, one per event",
        ),
        (
            b'["a", 1]',
            "application/json",
            400,
            "a JSON body must be an array of strings, one per event",
        ),
        (b"[]", "application/json", 400, "the JSON array holds no event"),
        (
            b"x" * (1024 * 1024 + 1),
            "text/plain",
            413,
            "the body is larger than 1048576 bytes (http.max_body_bytes)",
        ),
    ],
    ids=["empty", "binary", "bad-json", "object", "not-strings", "none", "huge"],
)
def test_a_bad_body_is_refused_and_nothing_pushed(
    r: redis.Redis, api: httpx.Client, body: bytes, content_type: str, status: int, error: str
):
    answer = api.post("/v1/queues/in/events", content=body, headers={"content-type": content_type})
    assert (answer.status_code, answer.json()) == (status, {"error": error})
    assert r.exists("in") == 0


def test_a_chunked_body_over_the_limit_is_413(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
):
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"x" * 100

    with serving(redis_server.url, tmp_path, max_body_bytes=1000) as api:
        answer = api.post("/v1/queues/in/events", content=chunks())
    assert answer.status_code == 413
    assert r.exists("in") == 0


def test_a_wrong_typed_key_is_409_and_nothing_moves(r: redis.Redis, api: httpx.Client):
    r.set("in", "a string")
    answer = api.post("/v1/queues/in/events", content="job/1")
    assert answer.status_code == 409
    assert "wrong type" in answer.json()["error"]
    r.lpush("todo", "task/1")
    r.set("todo/claims", "a string")
    assert api.post("/v1/queues/todo/promises").status_code == 409
    assert r.lrange("todo", 0, -1) == [b"task/1"]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/queues/todo/promises", {"timeout": "forever"}),
        ("/v1/queues/todo/promises", {"wait": "1 s"}),
        (f"/v1/queues/todo/promises/{ID}/retry", {"delay": "-1s"}),
        ("/v1/queues/todo/promises/not-an-id/done", {}),
    ],
)
def test_bad_parameters_are_422(api: httpx.Client, path: str, params: dict[str, str]):
    answer = api.post(path, params=params)
    assert answer.status_code == 422
    assert list(answer.json()) == ["error"]


def test_tokens_are_required_when_configured(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("P_TOKEN", "produce-secret")
    monkeypatch.setenv("A_TOKEN", "admin-secret")
    tokens = {"produce": "P_TOKEN", "admin": "A_TOKEN"}
    with serving(redis_server.url, tmp_path, tokens=tokens) as api:
        assert api.post("/v1/queues/in/events", content="job/1").status_code == 401
        wrong = api.post(
            "/v1/queues/in/events", content="job/1", headers={"authorization": "Bearer nope"}
        )
        assert (wrong.status_code, wrong.json()) == (
            403,
            {"error": "this token does not allow produce"},
        )
        for token in ("produce-secret", "admin-secret"):
            ok = api.post(
                "/v1/queues/in/events",
                content="job/1",
                headers={"authorization": f"Bearer {token}"},
            )
            assert ok.status_code == 202
        # consume has no token of its own: the admin token is needed.
        produce_only = {"authorization": "Bearer produce-secret"}
        assert api.post("/v1/queues/todo/promises", headers=produce_only).status_code == 403
        assert api.post("/v1/queues/todo/promises").status_code == 401
        assert api.get("/livez").status_code == 200
    assert r.llen("in") == 2


def test_a_token_variable_not_set_stops_resc_at_start(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from resc.core.errors import RescError

    monkeypatch.delenv("MISSING_TOKEN", raising=False)
    with (
        pytest.raises(RescError, match="the environment variable MISSING_TOKEN is not set"),
        serving(redis_server.url, tmp_path, tokens={"consume": "MISSING_TOKEN"}),
    ):
        pass


def test_http_produce_and_consume_lists_replace_the_defaults(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
):
    with serving(redis_server.url, tmp_path, produce=["other"], consume=["per/x"]) as api:
        assert api.post("/v1/queues/in/events", content="a").status_code == 404
        assert api.post("/v1/queues/other/events", content="a").status_code == 202
        assert api.post("/v1/queues/todo/promises").status_code == 404
        r.lpush("per/x", "t")
        assert claim(api, "per/x")["task"] == "t"
    assert json.loads(json.dumps(r.lrange("other", 0, -1), default=bytes.decode)) == ["a"]


def test_redis_down_is_503_and_the_api_comes_back_with_it(
    restartable_redis: RedisServer, tmp_path: Path
):
    with serving(restartable_redis.url, tmp_path) as api:
        client = restartable_redis.client()
        client.lpush("todo", "task/1")
        promise = claim(api, timeout="1s")
        client.close()
        restartable_redis.kill()
        down = api.post("/v1/queues/in/events", content="job/1")
        assert down.status_code == 503
        assert down.json()["error"].startswith("Redis unavailable: ")
        assert api.post("/v1/queues/todo/promises").status_code == 503
        restartable_redis.start()
        client = restartable_redis.client()
        wait_until(lambda: client.llen("todo") == 1)  # the reaper is back: put back once
        assert api.post(f"/v1/queues/todo/promises/{promise['id']}/done").status_code == 409
        assert api.post("/v1/queues/in/events", content="job/1").status_code == 202
        assert client.lrange("todo", 0, -1) == [b"task/1"]
        client.close()
