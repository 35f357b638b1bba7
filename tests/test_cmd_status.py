"""`resc status`: queue lengths read from a real Redis, once, as JSON, and live."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import redis

from resc.dev.embedded import free_port
from tests.conftest import (
    RedisServer,
    make_config,
    resc_process,
    run_resc,
    wait_until,
    write_config,
)

ROOT = Path(__file__).resolve().parent.parent


def example(redis_server: RedisServer, tmp_path: Path) -> Path:
    text = (ROOT / "configs" / "example.hjson").read_text()
    path = tmp_path / "example.hjson"
    path.write_text(text.replace("redis://127.0.0.1:6379/", redis_server.url))
    return path


def fill(r: redis.Redis) -> None:
    r.lpush("global/events", "acq/plantA/1", "acq/plantA/2")
    r.lpush("global/taken", "acq/plantA/0")
    r.lpush("global/events/failed", "bad")
    r.hset("global/events/failed/reasons", "bad", "variable ${b} has no value for this event")


def test_lengths_of_the_configured_queues_and_how_to_list_the_others(r, redis_server, tmp_path):
    fill(r)
    done = run_resc("status", str(example(redis_server, tmp_path)))
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == [
        f"Redis {redis_server.url}",
        "KEY                   ROLE    LENGTH  NOTE",
        "global/events         input        2",
        "global/taken          taken        1  oldest: age n/a (--watch measures it)",
        "global/events/failed  failed       1  reasons: 1",
        "not shown (names made from events): trt/${process_id}/todo-queue, "
        "trt/${process_id}/todo-set",
        "to list them: --queue 'trt/*/todo-queue' --queue 'trt/*/todo-set'",
    ]


def test_globs_list_matching_keys_and_wrong_types_are_named(r, redis_server, tmp_path):
    config = make_config(
        redis_server.url,
        [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "audit", "set": "seen"}}]}],
    )
    r.set("audit", "not a list")
    r.zadd("seen", {"a": 1, "b": 2})
    r.lpush("trt/p1/todo", "t1", "t2", "t3")
    r.hset("trt/p2/todo", "x", "y")
    done = run_resc("status", str(write_config(tmp_path, config)), "--queue", "trt/*/todo")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == [
        f"Redis {redis_server.url}",
        "KEY          ROLE    LENGTH  NOTE",
        "in           input        0",
        "in/taken     taken        0",
        "in/failed    failed       0  reasons: 0",
        "audit        queue        -  holds a string, not a list",
        "seen         set          2",
        "trt/p1/todo  scan         3",
        "trt/p2/todo  scan         1  a hash",
    ]


def test_json_for_scripts(r, redis_server, tmp_path):
    fill(r)
    done = run_resc("status", str(example(redis_server, tmp_path)), "--json")
    assert done.returncode == 0
    data = json.loads(done.stdout)
    assert isinstance(data.pop("time"), float)

    def key(name: str, role: str, length: int, reasons: int | None = None) -> dict[str, Any]:
        return {
            "key": name,
            "role": role,
            "type": "list",
            "length": length,
            "rate_per_s": None,
            "reasons": reasons,
            "oldest_taken_min_age_s": None,
        }

    assert data == {
        "redis": redis_server.url,
        "keys": [
            key("global/events", "input", 2),
            key("global/taken", "taken", 1),
            key("global/events/failed", "failed", 1, reasons=1),
        ],
        "not_shown": ["trt/${process_id}/todo-queue", "trt/${process_id}/todo-set"],
    }


def test_redis_down_is_a_clear_message_with_exit_1_and_no_password(tmp_path):
    port = free_port()
    config = make_config(
        f"redis://:s3cret@127.0.0.1:{port}/0", [{"input_queue": "in", "rules": []}]
    )
    done = run_resc("status", str(write_config(tmp_path, config)))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"resc: cannot read Redis at redis://:***@127.0.0.1:{port}/0: Error 111 connecting to "
        f"127.0.0.1:{port}. Connection refused.\n"
    )


def test_watch_json_gives_rates_and_how_long_the_oldest_taken_event_has_been_there(
    r, redis_server, tmp_path
):
    fill(r)
    process = resc_process(
        "status", str(example(redis_server, tmp_path)), "--watch", "--json", "--interval", "0.2"
    )
    assert process.stdout is not None
    try:
        first = json.loads(process.stdout.readline())
        r.lpush("global/events", "acq/plantA/3", "acq/plantA/4")
        lines = [first]
        while lines[-1]["keys"][0]["length"] != 4:
            lines.append(json.loads(process.stdout.readline()))
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)
    assert (process.returncode, stderr) == (0, "")
    before, after = lines[-2], lines[-1]
    rate = after["keys"][0]["rate_per_s"]
    assert rate == 2 / (after["time"] - before["time"])
    taken = after["keys"][1]
    assert (taken["key"], taken["oldest_taken_min_age_s"]) == (
        "global/taken",
        after["time"] - first["time"],
    )
    assert first["keys"][1]["oldest_taken_min_age_s"] == 0.0


def test_watch_draws_a_live_table_and_stops_on_ctrl_c(r, redis_server, tmp_path):
    fill(r)
    r.delete("global/taken")  # its age would depend on timing
    process = resc_process(
        "status",
        str(example(redis_server, tmp_path)),
        "--watch",
        "--interval",
        "0.1",
        env={"COLUMNS": "100"},
    )
    try:
        wait_until(lambda: any(c["name"] == "resc-status" for c in r.client_list()))
        r.lpush("global/events", "acq/plantA/3")
        time.sleep(0.5)  # a few refreshes, the last ones without change
    finally:
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=10)
    assert (process.returncode, stderr) == (0, "")
    # Not on a terminal, rich prints the table once, as it was when stopped.
    lines = stdout.splitlines()
    assert lines[2:8] == [
        "┃ KEY                  ┃ ROLE   ┃ LENGTH ┃ RATE/S ┃ NOTE       ┃",
        "┡━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━╇━━━━━━━━╇━━━━━━━━╇━━━━━━━━━━━━┩",
        "│ global/events        │ input  │      3 │   +0.0 │            │",
        "│ global/taken         │ taken  │      0 │   +0.0 │            │",
        "│ global/events/failed │ failed │      1 │   +0.0 │ reasons: 1 │",
        "└──────────────────────┴────────┴────────┴────────┴────────────┘",
    ]


def test_status_only_reads(r, redis_server, tmp_path):
    fill(r)
    r.config_resetstat()
    path = str(example(redis_server, tmp_path))
    assert run_resc("status", path, "--queue", "*").returncode == 0
    used = {name.removeprefix("cmdstat_") for name in r.info("commandstats")}
    connection = {"client|setinfo", "client|setname", "hello", "info", "config|resetstat"}
    assert used - connection == {"type", "llen", "hlen", "scan", "lindex"}


def test_an_embedded_redis_is_read_at_the_url_given_with_redis(r, redis_server, tmp_path):
    config = make_config("embedded", [{"input_queue": "in", "rules": []}])
    path = str(write_config(tmp_path, config))
    done = run_resc("status", path)
    assert (done.returncode, done.stderr) == (
        2,
        "resc: the config's redis.url is 'embedded', a private server that resc run starts "
        "on a free port and names when it starts: give that URL with --redis\n",
    )
    r.lpush("in", "x")
    done = run_resc("status", path, "--redis", redis_server.url)
    assert (done.returncode, done.stdout.splitlines()[:3]) == (
        0,
        [
            f"Redis {redis_server.url}",
            "KEY        ROLE    LENGTH  NOTE",
            "in         input        1",
        ],
    )
    done = run_resc("status", path, "--redis", "http://x")
    assert (done.returncode, done.stderr) == (
        2,
        "resc: --redis: must start with redis://, rediss:// or unix://\n",
    )
