"""The HTTP API and the dashboard on a real Redis Cluster of three masters: produce,
claim and done through a daemon; a batch into queues of three masters; a todo queue
whose keys cannot share its slot refused (at start, and at first use); a done queue in
another slot notified in two steps, once, and never lost when the second step is cut
off; the dashboard in a browser; a master killed under a producer; `resc run --http`
serving the API (in its own process and in resc's); idle connections and keys of the
wrong type."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from playwright.sync_api import expect, sync_playwright
from redis.cluster import RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)

from resc.config.load import config_from_source
from resc.config.source import read_source
from resc.connection.clients import cluster_client
from resc.dashboard.access import Access
from resc.dashboard.app import Dashboard
from resc.dev.embedded import free_port
from resc.server.api import store_error
from resc.server.claims import claims_key
from resc.server.service import HttpService, NoWatchers
from tests.cluster import ClusterTopology
from tests.conftest import make_config, resc_process, running, wait_until, write_config

pytestmark = pytest.mark.server

INPUT, TODO, SET = "{plant}/events", "{plant}/todo", "{plant}/todo-set"
# {plant}, {orders} and {zeta} are served by the three masters of the test cluster;
# global/events is in another slot than {plant}, on another master.
CO_LOCATED_DONE, CROSS_SLOT_DONE = "{plant}/done", "global/events"
ORDERS, ZETA = "{orders}/events", "{zeta}/events"
WATCHERS = [
    {
        "input_queue": INPUT,
        "rules": [
            {"on": r"^ev/(?P<n>\d+)$", "make": {"task": "task/${n}", "queue": TODO, "set": SET}}
        ],
    }
]
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def client(cluster: ClusterTopology) -> Iterator[RedisCluster]:
    made = cluster_client(cluster.url(), socket_timeout=5)
    yield made
    made.close()


def config_of(url: str, tmp_path: Path, **http: Any) -> Any:
    raw = make_config(url, WATCHERS, http={"listen": "127.0.0.1:0", **http})
    return config_from_source(read_source(write_config(tmp_path, raw, "api.json")))


@contextlib.contextmanager
def serving(
    url: str, tmp_path: Path, dashboard: bool = False, **http: Any
) -> Iterator[tuple[httpx.Client, HttpService]]:
    """The HTTP server of the config (with the dashboard), without watchers."""
    port = free_port()
    config = config_of(url, tmp_path, **http)
    extensions = (
        [Dashboard(lambda: config, NoWatchers(), dict, Access(None, actions=False))]
        if dashboard
        else []
    )
    service = HttpService(
        config,
        f"127.0.0.1:{port}",
        NoWatchers(),
        dict,
        reap_interval_s=0.05,
        extensions=extensions,
    )
    service.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as api:
            yield api, service
    finally:
        service.close()


def claim(api: httpx.Client, queue: str = TODO, **params: str) -> dict[str, Any]:
    answer = api.post(f"/v1/queues/{queue}/promises", params=params)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def done(api: httpx.Client, promise: dict[str, Any], queue: str = TODO) -> httpx.Response:
    return api.post(f"/v1/queues/{queue}/promises/{promise['id']}/done")


def test_events_produced_become_tasks_claimed_and_done_on_a_cluster(
    cluster: ClusterTopology, client: RedisCluster, tmp_path: Path
):
    url = cluster.url()
    with (
        running(make_config(url, WATCHERS), tmp_path),
        serving(url, tmp_path, done_queue=CO_LOCATED_DONE) as (api, _),
    ):
        one = api.post(f"/v1/queues/{INPUT}/events", content="ev/1")
        many = api.post(f"/v1/queues/{INPUT}/events", json=["ev/2", "ev/3", "ev/2"])
        assert (one.status_code, one.json()) == (202, {"queued": 1})
        assert (many.status_code, many.json()) == (202, {"queued": 3})
        wait_until(lambda: client.llen(TODO) == 3)
        promises = [claim(api, timeout="30s") for _ in range(3)]
        assert sorted(p["task"] for p in promises) == ["task/1", "task/2", "task/3"]
        assert {p["attempt"] for p in promises} == {1}
        info = api.get(f"/v1/queues/{TODO}").json()
        assert (info["length"], info["claims"], info["set"]) == (0, 3, 0)
        for promise in promises:
            answer = done(api, promise)
            assert answer.json() == {"id": promise["id"], "outcome": "done"}
        assert Counter(client.lrange(CO_LOCATED_DONE, 0, -1)) == Counter(
            [b"task/1", b"task/2", b"task/3"]
        )
        assert client.hlen(claims_key(TODO)) == 0
        # Done twice: the claim is gone, nothing is notified again.
        assert done(api, promises[0]).status_code == 409
        assert client.llen(CO_LOCATED_DONE) == 3


def test_a_batch_into_queues_of_three_masters_is_pushed_to_each(
    cluster: ClusterTopology, client: RedisCluster, tmp_path: Path
):
    masters = {cluster.master_of(queue).port for queue in (INPUT, ORDERS, ZETA)}
    assert len(masters) == 3
    batch = {INPUT: ["p/1", "p/2"], ORDERS: ["o/1"], ZETA: ["z/1", "z/2", "z/3"]}
    with serving(cluster.url(), tmp_path, produce=[INPUT, ORDERS, ZETA]) as (api, _):
        answer = api.post("/v1/events", json=batch)
        assert answer.status_code == 202, answer.text
        assert answer.json() == {"queued": 6, "queues": {INPUT: 2, ORDERS: 1, ZETA: 3}}
        for queue, events in batch.items():
            assert client.lrange(queue, 0, -1) == [e.encode() for e in reversed(events)]
        # A queue the API does not open: nothing at all is pushed.
        refused = api.post("/v1/events", json={INPUT: ["p/3"], "{other}/x": ["x"]})
        assert refused.status_code == 404
        assert refused.json() == {"error": "'{other}/x' is not a queue resc takes events into"}
        assert client.llen(INPUT) == 2
        assert api.post("/v1/events", json={INPUT: []}).status_code == 400
        assert api.post("/v1/events", json=[INPUT]).status_code == 400


def test_a_todo_queue_whose_keys_leave_its_slot_is_refused_at_start(
    cluster: ClusterTopology, tmp_path: Path
):
    port = free_port()
    raw = make_config(
        cluster.url(),
        WATCHERS,
        http={"listen": f"127.0.0.1:{port}", "consume": ["plain/todo", TODO]},
    )
    conf = str(write_config(tmp_path, raw))
    for command in (["serve", conf], ["dashboard", conf], ["run", conf]):
        process = resc_process(*command)
        _, log = process.communicate(timeout=30)
        assert process.returncode == 2, log
        assert (
            "resc: on a Redis Cluster the keys of the promises of 'plain/todo' must share its "
            "slot, and plain/todo/claims, plain/todo/claims/deadlines, plain/todo/claims/"
            "attempts, plain/todo/failed, plain/todo/failed/reasons, plain/todo/delayed do "
            "not: give the queue a hash tag, as in '{plain}/todo'" in log
        ), log
        assert "Traceback" not in log


def test_a_todo_queue_whose_keys_leave_its_slot_is_refused_at_first_use(
    cluster: ClusterTopology, client: RedisCluster, tmp_path: Path
):
    client.lpush("plain/todo", "task/1")
    client.lpush("{plant}/other", "task/2")
    with serving(cluster.url(), tmp_path, consume=["plain/todo"]) as (api, _):
        answer = api.post("/v1/queues/plain/todo/promises")
        assert answer.status_code == 409
        assert answer.json()["error"].endswith("give the queue a hash tag, as in '{plain}/todo'")
        unknown = api.post(f"/v1/queues/plain/todo/promises/{'0' * 32}/done")
        assert unknown.status_code == 409
        assert client.lrange("plain/todo", 0, -1) == [b"task/1"]
    # A set in another slot than its queue (the make says where it is).
    watchers = [
        {
            "input_queue": INPUT,
            "rules": [{"on": "^x$", "make": {"queue": "{plant}/other", "set": "other-set"}}],
        }
    ]
    port = free_port()
    raw = make_config(cluster.url(), watchers, http={"listen": f"127.0.0.1:{port}"})
    config = config_from_source(read_source(write_config(tmp_path, raw, "set.json")))
    service = HttpService(config, f"127.0.0.1:{port}", NoWatchers(), dict)
    service.start()
    try:
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/queues/{{plant}}/other/promises")
    finally:
        service.close()
    assert (answer.status_code, answer.json()) == (
        409,
        {
            "error": "on a Redis Cluster the dedup set of '{plant}/other' must share its "
            "slot, and 'other-set' does not: give the set the queue's hash tag"
        },
    )


def test_a_done_queue_in_another_slot_is_notified_once_per_task(
    cluster: ClusterTopology, client: RedisCluster, tmp_path: Path
):
    assert cluster.master_of(CROSS_SLOT_DONE).port != cluster.master_of(TODO).port
    tasks = [f"task/{i}" for i in range(50)]
    client.lpush(TODO, *tasks)
    with serving(cluster.url(), tmp_path, done_queue=CROSS_SLOT_DONE) as (api, _):
        for _ in tasks:
            promise = claim(api)
            assert done(api, promise).json() == {"id": promise["id"], "outcome": "done"}
            assert done(api, promise).status_code == 409
        assert api.post(f"/v1/queues/{TODO}/promises").status_code == 204
    assert Counter(client.lrange(CROSS_SLOT_DONE, 0, -1)) == Counter(t.encode() for t in tasks)
    assert client.hlen(claims_key(TODO)) == 0
    assert client.hlen(f"{TODO}/claims/attempts") == 0


def test_a_cross_slot_done_cut_off_after_the_push_is_notified_again_never_lost(
    cluster: ClusterTopology, client: RedisCluster, tmp_path: Path
):
    client.lpush(TODO, "task/1")
    with serving(cluster.url(), tmp_path, done_queue=CROSS_SLOT_DONE) as (api, service):
        store = service.api.store
        finish = store._finish
        cut: list[str] = []

        async def cut_off(*args: Any) -> Any:
            if not cut:
                cut.append("cut")
                raise redis.ConnectionError("Connection closed by server.")
            return await finish(*args)

        store._finish = cut_off  # type: ignore[method-assign]
        promise = claim(api, timeout="1s")
        answer = done(api, promise)
        assert answer.status_code == 503
        assert answer.json() == {"error": "Redis unavailable: Connection closed by server."}
        # Pushed, but the claim is still held: at its deadline the task goes back.
        assert client.lrange(CROSS_SLOT_DONE, 0, -1) == [b"task/1"]
        wait_until(lambda: client.llen(TODO) == 1, timeout_s=5)
        again = claim(api)
        assert (again["task"], again["attempt"]) == ("task/1", 2)
        assert done(api, again).json()["outcome"] == "done"
    assert client.lrange(CROSS_SLOT_DONE, 0, -1) == [b"task/1", b"task/1"]
    assert client.hlen(claims_key(TODO)) == 0


def test_the_dashboard_shows_the_queues_of_a_cluster(
    cluster: ClusterTopology, client: RedisCluster, tmp_path: Path
):
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    client.lpush(TODO, "task/1", "task/2", "task/3")
    client.zadd(SET, {"task/1": 1, "task/2": 1, "task/3": 1})
    client.lpush(INPUT, "ev/9")
    client.lpush(f"{INPUT}/failed", "ev/bad")
    with serving(cluster.url(), tmp_path, dashboard=True) as (api, _):
        claim(api)
        queues = api.get("/dashboard/api/queues")
        assert queues.status_code == 200, queues.text
        [row] = [q for q in queues.json()["queues"] if q["queue"] == TODO]
        assert (row["length"], row["set_size"], row["claims"]) == (2, 2, 1)
        failed = api.get("/dashboard/api/failed").json()
        assert f"{INPUT}/failed" in str(failed)
        overview = wait_until(
            lambda: (o := api.get("/dashboard/api/overview").json())["times"] and o
        )
        [watcher] = overview["watchers"]
        assert (watcher["input"], watcher["failed"]) == (1, 1)
        live = api.get("/dashboard/api/live").json()
        assert live["error"] is None
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(f"{api.base_url}/#queues")
                cells = page.locator(f'tr[data-queue="{TODO}"] td')
                expect(cells.nth(1)).to_have_text("2")
                expect(cells.nth(3)).to_have_text("2")
                page.goto(f"{api.base_url}/#overview")
                expect(page.locator(f'[data-watcher="{INPUT}"] [data-value="input"]')).to_have_text(
                    "1"
                )
                assert errors == []
            finally:
                browser.close()


def test_a_master_killed_under_a_producer_gives_503s_then_every_accepted_event_once(
    cluster_with_replicas: ClusterTopology, tmp_path: Path
):
    topology = cluster_with_replicas
    assert topology.master_of(INPUT).port != topology.master_of(ORDERS).port
    accepted: list[str] = []
    batches: list[dict[str, int]] = []
    statuses: Counter[int] = Counter()
    bodies: list[Any] = []
    stop = threading.Event()
    after_kill = threading.Event()

    def produce(api: httpx.Client) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            if i % 5:
                answer = api.post(f"/v1/queues/{INPUT}/events", content=f"ev/{i}")
                if answer.status_code == 202:
                    accepted.append(f"ev/{i}")
            else:
                answer = api.post("/v1/events", json={INPUT: [f"b/{i}"], ORDERS: [f"b/{i}"]})
                body = answer.json()
                if answer.status_code == 202:
                    batches.append({queue: i for queue in body["queues"]})
                elif "queued" in body:
                    batches.append({queue: i for queue in body["queued"]})
            statuses[answer.status_code] += 1
            if answer.status_code != 202:
                bodies.append(answer.json())
            time.sleep(0.005 if after_kill.is_set() else 0.01)

    with serving(topology.url(), tmp_path, produce=[INPUT, ORDERS]) as (api, _):
        thread = threading.Thread(target=produce, args=(api,))
        thread.start()
        try:
            wait_until(lambda: len(accepted) >= 50)
            topology.kill_master(topology.master_of(INPUT))
            after_kill.set()
            before = len(accepted)
            wait_until(lambda: len(accepted) >= before + 100, timeout_s=30)
        finally:
            stop.set()
            thread.join(20)
    assert set(statuses) <= {202, 503}, bodies[:5]
    assert statuses[503] > 0, "no request came while the master was down"
    assert all(set(b) == {"error"} or "queued" in b for b in bodies), bodies[:5]
    check = cluster_client(topology.url(), socket_timeout=5)
    try:
        found = Counter(e.decode() for e in check.lrange(INPUT, 0, -1))
        orders = Counter(e.decode() for e in check.lrange(ORDERS, 0, -1))
    finally:
        check.close()
    assert all(found[event] == 1 for event in accepted), "an accepted event is lost or twice"
    for batch in batches:
        for queue, i in batch.items():
            assert (found if queue == INPUT else orders)[f"b/{i}"] == 1, (queue, i)
    # A request answered 503 may or may not have pushed: never twice.
    assert max(found.values()) == 1 and max(orders.values()) == 1


@pytest.mark.parametrize("api_process", [True, False])
def test_resc_run_on_a_cluster_serves_the_api(
    cluster: ClusterTopology, client: RedisCluster, tmp_path: Path, api_process: bool
):
    port = free_port()
    config = make_config(
        cluster.url(),
        WATCHERS,
        http={
            "listen": f"127.0.0.1:{port}",
            "done_queue": CROSS_SLOT_DONE,
            "api_process": api_process,
        },
    )
    process = resc_process(str(write_config(tmp_path, config)))
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(base + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, 30)
        with httpx.Client(base_url=base, timeout=10) as api:
            produced = api.post(f"/v1/queues/{INPUT}/events", json=["ev/1", "ev/2"])
            assert produced.status_code == 202, produced.text
            wait_until(lambda: client.llen(TODO) == 2)
            for _ in range(2):
                assert done(api, claim(api)).json()["outcome"] == "done"
            assert api.get(f"/v1/queues/{TODO}").json()["claims"] == 0
            assert "resc_events_taken_total" in api.get("/metrics").text
    finally:
        process.send_signal(signal.SIGTERM)
        _, log = process.communicate(timeout=20)
    assert process.returncode == 0, log
    assert sorted(client.lrange(CROSS_SLOT_DONE, 0, -1)) == [b"task/1", b"task/2"]
    assert "does not support a Redis Cluster" not in log
    assert "Traceback" not in log
    assert "HTTP API process ended" not in log


def test_requests_work_after_idling_longer_than_the_socket_timeout(
    cluster: ClusterTopology, client: RedisCluster, tmp_path: Path
):
    with serving(cluster.url(), tmp_path) as (api, _):
        assert api.post(f"/v1/queues/{INPUT}/events", content="ev/1").status_code == 202
        assert api.get(f"/v1/queues/{TODO}").status_code == 200
        started = time.monotonic()
        # Waits past the clients' 5 s socket timeout for a task that never comes.
        assert api.post(f"/v1/queues/{TODO}/promises", params={"wait": "6s"}).status_code == 204
        assert time.monotonic() - started >= 6
        time.sleep(1)
        assert api.post(f"/v1/queues/{INPUT}/events", content="ev/2").status_code == 202
        assert api.get(f"/v1/queues/{INPUT}").json()["length"] == 2
        client.lpush(TODO, "task/1")
        assert done(api, claim(api)).status_code == 200


def test_keys_of_the_wrong_type_are_a_clear_409(
    cluster: ClusterTopology, client: RedisCluster, tmp_path: Path
):
    client.set(TODO, "not a list")
    client.set(ORDERS, "not a list")
    with serving(cluster.url(), tmp_path, produce=[INPUT, ORDERS]) as (api, _):
        claimed = api.post(f"/v1/queues/{TODO}/promises")
        assert claimed.status_code == 409
        assert claimed.json() == {
            "error": "a key has the wrong type: WRONGTYPE {plant}/todo holds a string, not a list"
        }
        produced = api.post(f"/v1/queues/{ORDERS}/events", content="x")
        assert produced.status_code == 409
        assert produced.json()["error"].startswith("a key has the wrong type: WRONGTYPE")
        batch = api.post("/v1/events", json={INPUT: ["ev/1"], ORDERS: ["x"]})
        assert batch.status_code == 409
        body = batch.json()
        assert body["queued"] == {INPUT: 1}
        assert list(body["not_queued"]) == [ORDERS]
        assert body["error"].startswith("some queues were not pushed: a key has the wrong type")
        info = api.get(f"/v1/queues/{TODO}")
        assert info.status_code == 409
        assert info.json()["error"].startswith("a key has the wrong type")
    assert client.lrange(INPUT, 0, -1) == [b"ev/1"]


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (MovedError("3999 127.0.0.1:6381"), "MOVED 3999 127.0.0.1:6381"),
        (AskError("3999 127.0.0.1:6381"), "ASK 3999 127.0.0.1:6381"),
        (TryAgainError("Multiple keys request during rehashing of slot"), "TRYAGAIN"),
        (ClusterDownError("The cluster is down"), "CLUSTERDOWN The cluster is down"),
        (redis.ConnectionError("Error 111 connecting"), "Redis unavailable: Error 111"),
        (SlotNotCoveredError("Slot 12 is not covered"), "the cluster serves no slot"),
        (RedisClusterException("Redis Cluster cannot be connected."), "Redis Cluster unavail"),
    ],
)
def test_cluster_errors_are_a_503_that_says_what_happened(error: Exception, said: str):
    status, message, headers = store_error(error)
    assert (status, headers) == (503, {"Retry-After": "1"})
    assert said in message


def test_an_unexpected_cluster_refusal_is_a_503_not_a_traceback(
    cluster: ClusterTopology, tmp_path: Path
):
    with serving(cluster.url(), tmp_path) as (api, service):
        store = service.api.store

        async def refused(*args: Any) -> Any:
            raise RedisClusterException("all keys must map to the same key slot")

        store.push = refused  # type: ignore[method-assign]
        answer = api.post(f"/v1/queues/{INPUT}/events", content="ev/1")
    assert (answer.status_code, answer.json()) == (
        503,
        {"error": "Redis refused: all keys must map to the same key slot"},
    )
