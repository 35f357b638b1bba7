"""The HTTP listener of a running resc: /metrics moving by exact amounts, /livez, and
/readyz following Redis."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from resc.config.load import config_from_source
from resc.config.models import Fetch
from resc.config.source import read_source
from resc.core.errors import FetchError
from resc.core.metrics import registry_for
from resc.dev.embedded import free_port
from resc.engine.daemon import Daemon
from tests.conftest import (
    RedisServer,
    make_config,
    resc_process,
    wait_until,
    write_config,
)
from tests.fetchers import KINDS, fetcher_of
from tests.webservice import Answer, ScriptedService

W = "global/events"


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric(text: str, name: str, **labels: str) -> float:
    """The value of the one sample `name` with exactly these labels."""
    found = []
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m and m[1] == name and dict(LABEL.findall(m[2] or "")) == labels:
            found.append(float(m[3]))
    assert len(found) == 1, f"{name} {labels}: {found}"
    return found[0]


@pytest.fixture
def daemon(redis_server: RedisServer, tmp_path: Path, web: ScriptedService) -> Iterator[str]:
    web.answer("/db/7", {"name": "bolt"})
    web.answer("/db/8", {}, status=404)
    config = make_config(
        redis_server.url,
        [
            {
                "input_queue": "global/events",
                "rules": [
                    {
                        "name": "compute",
                        "on": r"^acq/(?P<p>\w+)/(?P<n>\d+)$",
                        "make": {"task": "trt/${p}/${n}", "queue": "todo", "set": "todo-set"},
                    },
                    {
                        "name": "lookup",
                        "on": r"^db/(?P<id>\d+)$",
                        "fetch": [{"url": web.url + "/db/${id}", "returns": "db"}],
                        "make": {"task": "${db.name}", "queue": "named"},
                    },
                ],
            }
        ],
    )
    port = free_port()
    process = resc_process(
        "run",
        "--http",
        f"127.0.0.1:{port}",
        "--instance",
        "pod-3",
        str(write_config(tmp_path, config)),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(base))
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0


def _answers(base: str) -> bool:
    try:
        return get(base + "/livez")[0] == 200
    except OSError:
        return False


def test_metrics_count_events_tasks_and_rules_exactly(r, daemon: str):
    wait_until(lambda: get(daemon + "/readyz")[0] == 200)
    r.lpush("global/events", "acq/p/1", "acq/p/1", "nothing", "db/7", "db/8", b"\xff")
    wait_until(lambda: r.llen("global/events/failed") == 2 and r.llen("named") == 1)

    def settled() -> str | None:
        text = get(daemon + "/metrics")[1]
        return text if metric(text, "resc_events_committed_total", watcher=W) == 4 else None

    text = wait_until(settled)
    assert metric(text, "resc_events_taken_total", watcher=W) == 6
    assert metric(text, "resc_events_failed_total", watcher=W) == 2
    assert metric(text, "resc_tasks_pushed_total", watcher=W, rule="compute") == 1
    assert metric(text, "resc_tasks_deduplicated_total", watcher=W, rule="compute") == 1
    assert metric(text, "resc_tasks_pushed_total", watcher=W, rule="lookup") == 1
    assert metric(text, "resc_rule_matches_total", watcher=W, rule="compute") == 2
    assert metric(text, "resc_rule_matches_total", watcher=W, rule="lookup") == 2
    assert metric(text, "resc_fetch_requests_total", watcher=W, rule="lookup", outcome="ok") == 1
    assert (
        metric(text, "resc_fetch_requests_total", watcher=W, rule="lookup", outcome="failed") == 1
    )
    assert metric(text, "resc_fetch_seconds_count", watcher=W, rule="lookup") == 2
    assert metric(text, "resc_event_seconds_count", watcher=W) == 6
    assert metric(text, "resc_batch_size_sum", watcher=W) == 6
    assert metric(text, "resc_queue_length", watcher=W, queue="input") == 0
    assert metric(text, "resc_queue_length", watcher=W, queue="failed") == 2
    assert metric(text, "resc_watcher_ready", watcher=W) == 1
    assert metric(text, "resc_redis_reconnects_total", watcher=W) == 0
    assert 'resc_build_info{version="' in text
    # The instance's id, on an info metric of its own (Prometheus sets `instance`).
    host = socket.gethostname()
    assert metric(text, "resc_instance_info", watcher=W, id="pod-3", host=host) == 1
    r.lpush("global/events/taken/pod-3", "held")  # as if it were in hand
    text = get(daemon + "/metrics")[1]
    assert metric(text, "resc_queue_length", watcher=W, queue="taken") == 1
    r.delete("global/events/taken/pod-3")

    r.lpush("global/events", "acq/p/2")
    text = wait_until(
        lambda: (
            (t := get(daemon + "/metrics")[1])
            and metric(t, "resc_events_committed_total", watcher=W) == 5
            and t
        )
    )
    assert metric(text, "resc_tasks_pushed_total", watcher=W, rule="compute") == 2
    assert metric(text, "resc_events_taken_total", watcher=W) == 7


def test_livez_and_unknown_paths(daemon: str):
    assert get(daemon + "/livez") == (200, "ok\n")
    assert get(daemon + "/nope") == (404, "resc serves /metrics, /livez and /readyz\n")


def test_readyz_is_503_while_redis_is_down_and_200_when_it_is_back(tmp_path: Path):
    server = RedisServer(tmp_path)
    server.start()
    config = make_config(
        server.url, [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "out"}}]}]
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = resc_process(
        "run",
        "--http",
        f"127.0.0.1:{port}",
        "--instance",
        "pod-3",
        str(write_config(tmp_path, config)),
    )
    try:
        wait_until(lambda: _answers(base) and get(base + "/readyz")[0] == 200)
        assert json.loads(get(base + "/readyz")[1]) == {"ready": True, "not_ready": {}}
        server.kill()
        wait_until(lambda: get(base + "/readyz")[0] == 503)
        body = json.loads(get(base + "/readyz")[1])
        assert body["ready"] is False
        assert body["not_ready"]["in"].startswith("Redis unavailable: ")
        assert get(base + "/livez")[0] == 200
        server.start()
        wait_until(lambda: get(base + "/readyz")[0] == 200, timeout_s=20)
        text = get(base + "/metrics")[1]
        assert metric(text, "resc_redis_reconnects_total", watcher="in") == 1
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
        server.kill()


def test_bad_http_address_is_a_usage_error(tmp_path: Path, redis_server):
    config = make_config(
        redis_server.url, [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "o"}}]}]
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "resc",
            "run",
            "--http",
            "nowhere",
            str(write_config(tmp_path, config)),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr == ("resc: --http: 'nowhere' is not HOST:PORT, for example 127.0.0.1:9090\n")


def test_readyz_is_503_from_the_first_answer_until_redis_can_be_reached(tmp_path: Path):
    server = RedisServer(tmp_path)  # started later
    config = make_config(
        server.url, [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "out"}}]}]
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = resc_process(
        "run",
        "--http",
        f"127.0.0.1:{port}",
        "--instance",
        "pod-3",
        str(write_config(tmp_path, config)),
    )
    try:
        wait_until(lambda: _answers(base), timeout_s=60)  # a loaded machine starts slowly
        statuses = [get(base + "/readyz")[0] for _ in range(20)]
        assert statuses == [503] * 20
        server.start()
        wait_until(lambda: get(base + "/readyz")[0] == 200, timeout_s=20)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
        server.kill()


def scrape(daemon: Daemon) -> str:
    return generate_latest(registry_for(daemon)).decode()


def test_counters_go_on_across_reloads_that_restart_watchers_or_remove_rules(
    r, redis_server, tmp_path: Path, web: ScriptedService
):
    web.answer("/db/7", {"name": "bolt"})
    lookup = {
        "name": "lookup",
        "on": r"^db/(?P<id>\d+)$",
        "fetch": [{"url": web.url + "/db/${id}", "returns": "db"}],
        "make": {"task": "${db.name}", "queue": "named"},
    }
    config = make_config(
        redis_server.url,
        [
            {
                "input_queue": "in",
                "rules": [lookup, {"name": "all", "on": "", "make": {"queue": "o"}}],
            }
        ],
    )
    path = write_config(tmp_path, config)
    daemon = Daemon(config_from_source(read_source(path)), path)
    daemon.start()
    try:
        r.lpush("in", "db/7", "x")
        wait_until(lambda: metric(scrape(daemon), "resc_events_committed_total", watcher="in") == 2)
        config["watchers"][0]["batch"] = 7  # a new watcher for "in"
        write_config(tmp_path, config)
        assert daemon.reload() is True
        r.lpush("in", "db/7")
        wait_until(lambda: metric(scrape(daemon), "resc_events_committed_total", watcher="in") == 3)
        del config["watchers"][0]["rules"][1]  # rule "all" removed: same watcher
        write_config(tmp_path, config)
        assert daemon.reload() is True
        r.lpush("in", "db/7")
        wait_until(lambda: metric(scrape(daemon), "resc_events_committed_total", watcher="in") == 4)
        text = scrape(daemon)
    finally:
        daemon.stop.set()
        assert daemon.wait() == 0
    assert metric(text, "resc_events_taken_total", watcher="in") == 4
    assert metric(text, "resc_rule_matches_total", watcher="in", rule="lookup") == 3
    assert metric(text, "resc_tasks_pushed_total", watcher="in", rule="all") == 3  # kept
    assert metric(text, "resc_fetch_requests_total", watcher="in", rule="lookup", outcome="ok") == 3
    assert metric(text, "resc_fetch_seconds_count", watcher="in", rule="lookup") == 3
    assert metric(text, "resc_event_seconds_count", watcher="in") == 4
    assert metric(text, "resc_watcher_ready", watcher="in") == 1


def test_a_removed_watcher_keeps_its_counts_but_not_its_readiness(r, redis_server, tmp_path: Path):
    rule = {"on": "", "make": {"queue": "o"}}
    config = make_config(
        redis_server.url,
        [{"input_queue": "a", "rules": [rule]}, {"input_queue": "b", "rules": [rule]}],
    )
    path = write_config(tmp_path, config)
    daemon = Daemon(config_from_source(read_source(path)), path)
    daemon.start()
    try:
        r.lpush("b", "x")
        wait_until(lambda: metric(scrape(daemon), "resc_events_committed_total", watcher="b") == 1)
        del config["watchers"][1]
        write_config(tmp_path, config)
        assert daemon.reload() is True
        text = scrape(daemon)
    finally:
        daemon.stop.set()
        assert daemon.wait() == 0
    assert metric(text, "resc_events_committed_total", watcher="b") == 1
    assert 'resc_watcher_ready{watcher="b"}' not in text
    assert 'resc_queue_length{queue="input",watcher="b"}' not in text
    assert metric(text, "resc_watcher_ready", watcher="a") == 1


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (Answer(b"<html>busy</html>"), "bad response"),
        (Answer({"name": "x" * 2000}), "more than max_response_bytes"),
        (Answer({"name": "x" * 2000}, chunked=True), "larger than max_response_bytes"),
        (Answer({"data": {"items": [{}, {}, {}]}}), "more than max_results"),
        (Answer({"data": {}}), "has no field"),
    ],
    ids=["not-json", "too-large", "too-large-chunked", "too-many", "no-path"],
)
@pytest.mark.parametrize("kind", KINDS)
def test_an_answer_that_fails_the_event_counts_as_failed(
    web: ScriptedService, answer: Answer, reason: str, kind: str
):
    web.script("/bad", answer)
    web.answer("/good", {"data": {"items": [{"name": "a"}]}})
    limits = {"max_results": 2, "max_response_bytes": 1000, "retries": 0}
    bad, good = (
        Fetch.model_validate(
            {"url": web.url + path, "returns": "r", "path": "data.items", **limits}
        )
        for path in ("/bad", "/good")
    )
    fetcher = fetcher_of(kind)
    with pytest.raises(FetchError, match=reason):
        fetcher(bad, {})
    assert fetcher(good, {}) == [{"r.name": b"a"}]
    fetcher.close()
    counts = {str(fetch.url): dict(stats.outcomes) for fetch, stats in fetcher.stats()}
    assert counts == {web.url + "/bad": {"failed": 1}, web.url + "/good": {"ok": 1}}
    assert [stats.seconds.buckets()[-1][1] for _, stats in fetcher.stats()] == [1, 1]


def test_the_first_scrape_after_a_redis_restart_has_the_queue_lengths(tmp_path: Path):
    server = RedisServer(tmp_path)
    server.start()
    config = make_config(
        server.url, [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "out"}}]}]
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = resc_process(
        "run",
        "--http",
        f"127.0.0.1:{port}",
        "--instance",
        "pod-3",
        str(write_config(tmp_path, config)),
    )
    try:
        wait_until(lambda: _answers(base) and get(base + "/readyz")[0] == 200)
        assert (
            metric(get(base + "/metrics")[1], "resc_queue_length", watcher="in", queue="input") == 0
        )
        server.kill()
        server.start()
        client = server.client()
        client.lpush("in/failed", "f1", "f2")
        text = get(base + "/metrics")[1]
        client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
        server.kill()
    assert metric(text, "resc_queue_length", watcher="in", queue="failed") == 2
