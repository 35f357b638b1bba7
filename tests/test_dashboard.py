"""The web dashboard against a daemon on a real Redis, in a real browser (Debian's
chromium driven by Playwright): the overview's numbers after known events, the rules'
counts, a failed event replayed from the page, the explain box, the live flow, an event
holding a <script> shown as text; and, over plain HTTP, who may read and who may act.
Screenshots of every page go to pytest's temporary directory (and to
$RESC_DASHBOARD_SCREENSHOTS when set: `docs/img` makes the README's)."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from playwright.sync_api import Browser, Page, expect, sync_playwright

from resc.commands.dashboard import daemon_dashboard
from resc.config.load import config_from_source
from resc.config.source import read_source
from resc.core.errors import RescError
from resc.core.failures import FailedRecord, encode
from resc.core.metrics import Histogram
from resc.dashboard.access import Access
from resc.dashboard.views import quantile_s
from resc.dev.embedded import free_port
from resc.engine.daemon import Daemon
from resc.server.service import daemon_service
from resc.worker import Worker
from tests.conftest import (
    RedisServer,
    make_config,
    resc_process,
    run_resc,
    wait_until,
    write_config,
)

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "dash-s3cret"
PROBE = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
RULES = [
    {
        "name": "orders",
        "on": r"^order/(?P<id>.+)$",
        "make": {"task": "ship ${id}", "queue": "todo/orders", "set": "todo/orders/set"},
    },
    {"name": "never", "on": "^zzz-never$", "make": {"queue": "todo/never"}},
    # Fails: the group took no part in the match, so ${missing} has no value.
    {"name": "broken", "on": "^bad/(?P<missing>z)?", "make": {"task": "${missing}", "queue": "x"}},
]
EVENTS = ["order/1", "order/2", "order/3", "other/1", f"order/{PROBE}", f"bad/{PROBE}"]


@dataclass
class Served:
    base: str
    r: redis.Redis
    daemon: Daemon
    actions: bool


@contextlib.contextmanager
def serve(server: RedisServer, folder: Path, access: Access) -> Iterator[Served]:
    """A daemon with the dashboard on its HTTP server, on its own Redis database."""
    port = free_port()
    config = make_config(
        server.url,
        [{"input_queue": "in", "rules": RULES}],
        listener_channel="flow",
        listener_format="json",
    )
    loaded = config_from_source(read_source(write_config(folder, config)))
    daemon = Daemon(loaded, grace_period_s=5)
    daemon.start()
    service = daemon_service(daemon, f"127.0.0.1:{port}", [daemon_dashboard(daemon, access)])
    service.extensions[0].history.interval_s = 0.2  # type: ignore[attr-defined]
    service.start()
    client = redis.Redis(port=server.port)
    try:
        yield Served(f"http://127.0.0.1:{port}", client, daemon, access.actions)
    finally:
        service.close()
        daemon.stop.set()
        assert daemon.wait() == 0
        client.close()


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The dashboard with actions and a password, on a Redis of its own; the known events
    processed, one failed for real (the probe) and one left failed by an earlier config
    (order/7)."""
    server = RedisServer(tmp_path_factory.mktemp("dash-redis"))
    server.start()
    client = redis.Redis(port=server.port)
    access = Access(PASSWORD.encode(), actions=True)
    with serve(server, tmp_path_factory.mktemp("dash"), access) as served:
        client.lpush("in", *EVENTS)
        wait_until(lambda: client.llen("in/failed") == 1 and client.llen("todo/orders") == 4)
        client.lpush("in/failed", "order/7")
        client.hset(
            "in/failed/reasons", "order/7", encode([FailedRecord("HTTP 503", time.time(), 2)])
        )
        client.zadd("todo/orders/delayed", {"1:ship later": (time.time() + 600) * 1000})
        # A worker of a queue that stays empty: registered, alive, nothing in hand.
        worker = Worker(
            server.url,
            queue="todo/never",
            done_queue=None,
            handler=lambda task: None,
            heartbeat_ttl_s=30.0,
            worker_id="worker-1",
        )
        worker.start()
        try:
            yield served
        finally:
            worker.stop()
            assert worker.wait(10)
    client.close()
    server.kill()


# Module-scoped: Playwright's sync API keeps an event loop running in this thread while
# it is open, and tests of other modules call asyncio.run().
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # No skip: without the browser the tests fail (.ci/run installs it).
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


SHOTS: dict[str, Path] = {}


def shoot(page: Page, name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    if "dir" not in SHOTS:
        SHOTS["dir"] = tmp_path_factory.mktemp("screenshots")
    path = SHOTS["dir"] / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    wanted = os.environ.get("RESC_DASHBOARD_SCREENSHOTS")
    if wanted:
        Path(wanted).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(wanted) / path.name)


@pytest.fixture
def page(browser: Browser, dash: Served) -> Iterator[Page]:
    context = browser.new_context(
        http_credentials={"username": "ops", "password": PASSWORD},
        viewport={"width": 1280, "height": 820},
        color_scheme="dark",
    )
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    yield opened
    context.close()
    assert errors == []


def open_page(page: Page, dash: Served, name: str) -> None:
    page.goto(f"{dash.base}/#{name}")
    expect(page.locator(f"#page-{name}")).to_be_visible()


def no_script_ran(page: Page) -> None:
    assert page.evaluate("window.__xss") is None


def test_the_overview_shows_the_watchers_queues_and_counts(
    page: Page, dash: Served, tmp_path_factory: pytest.TempPathFactory
):
    open_page(page, dash, "overview")
    panel = page.locator('[data-watcher="in"]')
    expect(panel.locator('[data-value="failed"]')).to_have_text("2")
    expect(panel.locator('[data-value="input"]')).to_have_text("0")
    expect(panel.locator('[data-value="taken"]')).to_have_text("0")
    expect(panel).to_contain_text("taken 6 · committed 5 · failed 1 since start")
    expect(page.locator("#status")).to_have_text("ready")
    instances = page.locator("#overview-instances")
    expect(instances).to_contain_text(str(os.getpid()))
    expect(instances).to_contain_text("this instance")
    expect(panel.locator("svg.spark polyline").first).to_be_attached()
    shoot(page, "overview", tmp_path_factory)


def test_the_rules_page_counts_and_highlights_the_rule_without_match(
    page: Page, dash: Served, tmp_path_factory: pytest.TempPathFactory
):
    open_page(page, dash, "rules")
    orders = page.locator('tr[data-rule="orders"]')
    expect(orders.locator("td").nth(2)).to_have_text("4")  # matches
    expect(orders.locator("td").nth(3)).to_have_text("4")  # pushed
    expect(page.locator('tr[data-rule="never"]')).to_have_class("idle")
    expect(page.locator('tr[data-rule="broken"] td').nth(2)).to_have_text("1")
    shoot(page, "rules", tmp_path_factory)


def test_the_queues_page_shows_lengths_sets_and_delayed_counts(
    page: Page, dash: Served, tmp_path_factory: pytest.TempPathFactory
):
    open_page(page, dash, "queues")
    row = page.locator('tr[data-queue="todo/orders"] td')
    expect(row.nth(1)).to_have_text("4")  # length
    expect(row.nth(2)).to_have_text("todo/orders/set")
    expect(row.nth(3)).to_have_text("4")  # in the set
    expect(row.nth(5)).to_have_text("1")  # delayed
    worker = page.locator("#queues-workers .panel", has_text="worker-1")
    expect(worker).to_contain_text("alive")
    expect(worker).to_contain_text("todo/never")
    expect(worker).to_contain_text("no task in hand")
    shoot(page, "queues", tmp_path_factory)


def test_the_probe_is_text_in_the_failed_list_the_live_flow_and_explain(
    page: Page, dash: Served, tmp_path_factory: pytest.TempPathFactory
):
    open_page(page, dash, "failed")
    texts = page.locator('[data-list="in/failed"] .item .text')
    expect(texts).to_have_count(2)
    expect(texts.first).to_have_text(f"bad/{PROBE}")
    assert page.locator("#page-failed script, #page-failed img").count() == 0
    shoot(page, "failed", tmp_path_factory)
    # The live flow: what the daemon publishes from now on.
    open_page(page, dash, "live")
    dash.r.lpush("in", f"order/{PROBE}-again")
    expect(page.locator("#live-list")).to_contain_text(f"ship {PROBE}-again")
    page.fill("#live-filter", "nothing-like-this")
    expect(page.locator("#live-list")).to_contain_text("Nothing yet.")
    page.fill("#live-filter", "again$")
    expect(page.locator("#live-list li")).to_have_count(1)
    assert page.locator("#live-list script, #live-list img").count() == 0
    page.fill("#live-filter", "")
    page.click("#live-pause")
    expect(page.locator("#live-pause")).to_have_text("Resume")
    shoot(page, "live", tmp_path_factory)
    no_script_ran(page)


def test_the_explain_box_shows_the_tasks_an_event_would_make(
    page: Page, dash: Served, tmp_path_factory: pytest.TempPathFactory
):
    open_page(page, dash, "explain")
    page.fill("#explain-event", "order/42")
    page.click("#explain-form button")
    result = page.locator('#explain-result [data-watcher="in"]')
    expect(result).to_contain_text("1 task")
    expect(result.locator("table.tasks td").nth(0)).to_have_text("ship 42")
    expect(result.locator("table.tasks td").nth(1)).to_have_text("todo/orders")
    shoot(page, "explain", tmp_path_factory)
    page.fill("#explain-event", f"bad/{PROBE}")
    page.click("#explain-form button")
    expect(result).to_contain_text("fails:")
    page.fill("#explain-event", f"order/{PROBE}")
    page.click("#explain-form button")
    expect(result.locator("table.tasks td").nth(0)).to_have_text(f"ship {PROBE}")
    no_script_ran(page)


def test_replaying_a_failed_event_from_the_page_moves_it_back(
    page: Page, dash: Served, tmp_path_factory: pytest.TempPathFactory
):
    open_page(page, dash, "failed")
    item = page.locator('[data-list="in/failed"] .item', has_text="order/7")
    expect(item.locator(".meta")).to_contain_text("HTTP 503")
    expect(item.locator(".meta")).to_contain_text("2 attempts")
    item.locator('button[data-action="requeue"]').click()
    expect(page.locator("#failed-note")).to_contain_text("in/failed: 1 requeued")
    wait_until(lambda: dash.r.zscore("todo/orders/set", "ship 7") is not None)
    assert dash.r.lrange("in/failed", 0, -1) == [f"bad/{PROBE}".encode()]
    assert dash.r.hexists("in/failed/reasons", "order/7") == 0
    expect(page.locator("#failed-journal")).to_contain_text("in/failed: 1 requeued")
    # Deleting asks first; refused, nothing is deleted.
    asked: list[str] = []

    def dismiss(dialog: Any) -> None:
        asked.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.locator('[data-list="in/failed"] button[data-action="delete"]').click()
    wait_until(lambda: asked)
    assert asked == ["Delete this copy from in/failed for good?"]
    assert dash.r.llen("in/failed") == 1
    no_script_ran(page)


def test_on_a_phone_in_the_light_scheme(
    browser: Browser, dash: Served, tmp_path_factory: pytest.TempPathFactory
):
    context = browser.new_context(
        http_credentials={"username": "ops", "password": PASSWORD},
        viewport={"width": 390, "height": 800},
        color_scheme="light",
        device_scale_factor=2,
    )
    phone = context.new_page()
    open_page(phone, dash, "overview")
    expect(phone.locator('[data-watcher="in"] [data-value="input"]')).to_have_text("0")
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    shoot(phone, "overview-phone-light", tmp_path_factory)
    context.close()


# --- who may read and act, over plain HTTP -----------------------------------------------


def basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()}


def csrf(base: str, headers: dict[str, str]) -> str:
    token = httpx.get(f"{base}/dashboard/api/session", headers=headers).json()["csrf"]
    assert isinstance(token, str) and len(token) > 20
    return token


REQUEUE_ALL: dict[str, Any] = {"action": "requeue", "select": "all", "confirm": True}


def test_every_path_needs_the_password_and_actions_need_the_csrf_token(dash: Served):
    for path in ("/", "/dashboard/static/app.js", "/dashboard/api/overview"):
        refused = httpx.get(dash.base + path)
        assert refused.status_code == 401, path
        assert refused.headers["www-authenticate"].startswith("Basic")
        assert httpx.get(dash.base + path, headers=basic("wrong")).status_code == 401
        assert httpx.get(dash.base + path, headers=basic(PASSWORD)).status_code == 200
    bearer = {"Authorization": f"Bearer {PASSWORD}"}
    assert httpx.get(dash.base + "/dashboard/api/failed", headers=bearer).status_code == 200
    page = httpx.get(dash.base + "/", headers=basic(PASSWORD))
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    before = dash.r.llen("in/failed")
    act = f"{dash.base}/dashboard/api/failed"
    token = csrf(dash.base, basic(PASSWORD))
    # No password, no CSRF token, a wrong one, another origin, not JSON: all refused.
    assert httpx.post(act, json=REQUEUE_ALL, headers={"X-CSRF-Token": token}).status_code == 401
    assert httpx.post(act, json=REQUEUE_ALL, headers=basic(PASSWORD)).status_code == 403
    wrong = {**basic(PASSWORD), "X-CSRF-Token": "x" * 43}
    assert httpx.post(act, json=REQUEUE_ALL, headers=wrong).status_code == 403
    good = {**basic(PASSWORD), "X-CSRF-Token": token}
    other = {**good, "Origin": "http://evil.example"}
    assert httpx.post(act, json=REQUEUE_ALL, headers=other).status_code == 403
    form = {**good, "Content-Type": "application/x-www-form-urlencoded"}
    assert httpx.post(act, content=b"action=requeue", headers=form).status_code == 415
    # Unconfirmed, or a filter that is no RE2 regex: refused with why.
    unconfirmed = httpx.post(act, json={**REQUEUE_ALL, "confirm": False}, headers=good)
    assert unconfirmed.status_code == 400
    assert "confirm" in unconfirmed.json()["error"]
    bad_regex = {"action": "delete", "select": "filter", "match": "(a", "confirm": True}
    answer = httpx.post(act, json=bad_regex, headers=good)
    assert answer.status_code == 400 and "match" in answer.json()["error"]
    assert dash.r.llen("in/failed") == before


def test_actions_are_refused_without_the_flag(redis_server: RedisServer, tmp_path: Path):
    r = redis.Redis(port=redis_server.port)
    r.flushall()
    r.lpush("in/failed", "order/8")
    with serve(redis_server, tmp_path, Access(None, actions=False)) as served:
        token = csrf(served.base, {})
        answer = httpx.post(
            f"{served.base}/dashboard/api/failed",
            json=REQUEUE_ALL,
            headers={"X-CSRF-Token": token},
        )
        assert answer.status_code == 403
        assert "--dashboard-actions" in answer.json()["error"]
        assert httpx.get(f"{served.base}/dashboard/api/session").json()["actions"] is False
    assert r.lrange("in/failed", 0, -1) == [b"order/8"]
    r.close()


def test_without_a_password_the_dashboard_listens_only_on_loopback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_server: RedisServer
):
    monkeypatch.delenv("RESC_DASHBOARD_PASSWORD", raising=False)
    with pytest.raises(RescError, match="RESC_DASHBOARD_PASSWORD"):
        Access.from_environment("RESC_DASHBOARD_PASSWORD", False, "0.0.0.0")
    assert Access.from_environment("RESC_DASHBOARD_PASSWORD", False, "127.0.0.1").secret is None
    conf = write_config(
        tmp_path, make_config(redis_server.url, [{"input_queue": "in", "rules": RULES}])
    )
    done = run_resc("dashboard", str(conf), "--http", f"0.0.0.0:{free_port()}")
    assert done.returncode != 0
    assert "needs a password: set the environment variable RESC_DASHBOARD_PASSWORD" in done.stderr
    done = run_resc("run", str(conf), "--dashboard-actions")
    assert done.returncode == 2
    assert "--dashboard" in done.stderr


def test_fetch_latency_quantiles_come_from_the_histogram():
    histogram = Histogram((0.1, 0.2, 0.5))
    assert quantile_s(histogram, 0.5) is None
    histogram.observe(0.15, 98)
    histogram.observe(0.4, 2)
    assert quantile_s(histogram, 0.5) == pytest.approx(0.1 + 0.1 * 50 / 98)
    assert quantile_s(histogram, 0.99) == pytest.approx(0.2 + 0.3 * 0.5)
    histogram.observe(9.0, 1000)
    assert quantile_s(histogram, 0.99) == 0.5  # above every bound: the highest


def test_resc_dashboard_alone_shows_the_queues_of_a_config_without_watchers(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
):
    config = make_config(redis_server.url, [{"input_queue": "in", "rules": RULES}])
    conf = write_config(tmp_path, config)
    r.lpush("in", "order/1", "order/2", "order/3")
    r.lpush("in/failed", "bad/1")
    port = free_port()
    env = {"RESC_DASHBOARD_PASSWORD": PASSWORD, "RESC_LOG": "info"}
    process = resc_process(
        "dashboard", str(conf), "--http", f"127.0.0.1:{port}", "--dashboard-actions", env=env
    )
    base, auth = f"http://127.0.0.1:{port}", basic(PASSWORD)

    def overview() -> Any:
        try:
            answer = httpx.get(f"{base}/dashboard/api/overview", headers=auth)
        except httpx.TransportError:
            return None
        return answer.json() if answer.status_code == 200 and answer.json()["times"] else None

    try:
        data = wait_until(overview, 30)
        (watcher,) = data["watchers"]
        assert (watcher["input"], watcher["taken"], watcher["failed"]) == (3, 0, 1)
        assert data["in_daemon"] is False and data["instances"] == []
        assert watcher["events"] is None  # no daemon here: no counts
        rules = httpx.get(f"{base}/dashboard/api/rules", headers=auth).json()
        assert [row["rule"] for row in rules["rules"]] == ["orders", "never", "broken"]
        assert "matches" not in rules["rules"][0]
        assert httpx.get(f"{base}/readyz").status_code == 200
        # Nothing is taken: no watcher runs here.
        assert r.llen("in") == 3
        token = csrf(base, auth)
        delete = {"action": "delete", "select": "one", "text": "bad/1", "confirm": True}
        done = httpx.post(
            f"{base}/dashboard/api/failed", json=delete, headers={**auth, "X-CSRF-Token": token}
        )
        assert done.json() == {
            "lists": [{"name": "in/failed", "deleted": 1, "already_queued": 0, "gone": 0}]
        }
        assert r.llen("in/failed") == 0
        r.lpush("in/failed", "bad/2", "bad/3")
        r.hset("in/failed/reasons", "bad/2", encode([FailedRecord("HTTP 503", 1.0, 1)]))
        r.hset("in/failed/reasons", "bad/3", encode([FailedRecord("timeout", 2.0, 1)]))
        by_reason = {"action": "requeue", "select": "filter", "reason": "50[0-9]$"}
        answer = httpx.post(
            f"{base}/dashboard/api/failed",
            json={**by_reason, "confirm": True},
            headers={**auth, "X-CSRF-Token": token},
        )
        assert answer.json()["lists"][0]["requeued"] == 1
        assert (r.lrange("in/failed", 0, -1), r.lrange("in", 0, 0)) == ([b"bad/3"], [b"bad/2"])
        huge = httpx.post(
            f"{base}/dashboard/api/failed",
            content=b"[" + b" " * 2_000_000 + b"]",
            headers={**auth, "X-CSRF-Token": token, "Content-Type": "application/json"},
        )
        assert huge.status_code == 413
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0
    deleted, requeued = [line for line in stderr.splitlines() if "dashboard action" in line]
    assert "in/failed" in deleted and "delete" in deleted and "127.0.0.1" in deleted
    assert "requeue" in requeued and "50[0-9]$" in requeued
    assert PASSWORD not in stderr


def test_resc_run_with_the_dashboard_on_loopback_needs_no_password(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
):
    config = make_config(redis_server.url, [{"input_queue": "in", "rules": RULES}])
    conf = write_config(tmp_path, config)
    port = free_port()
    env = {"RESC_DASHBOARD_PASSWORD": ""}
    process = resc_process("run", str(conf), "--http", f"127.0.0.1:{port}", "--dashboard", env=env)
    base = f"http://127.0.0.1:{port}"

    def session() -> Any:
        try:
            answer = httpx.get(f"{base}/dashboard/api/session")
        except httpx.TransportError:
            return None
        return answer.json() if answer.status_code == 200 else None

    try:
        found = wait_until(session, 30)
        assert (found["in_daemon"], found["actions"], found["watchers"]) == (True, False, ["in"])
        assert httpx.get(base + "/").status_code == 200
        r.lpush("in", "order/5")
        wait_until(lambda: r.llen("todo/orders") == 1, 15)
        rows = httpx.get(f"{base}/dashboard/api/rules").json()["rules"]
        assert {row["rule"]: row["pushed"] for row in rows} == {
            "orders": 1,
            "never": 0,
            "broken": 0,
        }
    finally:
        process.terminate()
        assert process.wait(15) == 0


def test_keys_of_the_wrong_type_are_said_not_crashed_on(
    r: redis.Redis, redis_server: RedisServer, tmp_path: Path
):
    r.set("todo/orders/delayed", "not a sorted set")
    r.set("todo/orders", "not a list")
    r.set("in/failed/reasons", "not a hash")
    with serve(redis_server, tmp_path, Access(None, actions=False)) as served:
        queues = httpx.get(f"{served.base}/dashboard/api/queues").json()["queues"]
        orders = next(q for q in queues if q["queue"] == "todo/orders")
        assert orders["delayed"] is None and orders["length"] is None
        assert "todo/orders holds a string, not a list" in orders["wrong_types"]
        failed = httpx.get(f"{served.base}/dashboard/api/failed")
        assert failed.status_code == 503
        assert "in/failed/reasons holds a string, not a hash" in failed.json()["error"]
        too_long = httpx.post(f"{served.base}/dashboard/api/explain", json={"event": "x" * 70_000})
        assert too_long.status_code == 422
