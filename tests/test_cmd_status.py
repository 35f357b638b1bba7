"""`resc status`: queue lengths read from a real Redis, once, as JSON, and live."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from resc.dev.embedded import free_port
from resc.worker import TaskFailed, Worker
from resc.worker import store as worker_store
from tests.conftest import (
    RedisServer,
    make_config,
    resc_process,
    run_resc,
    running,
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
        "not shown (names made from events): trt/${process_id}/todo-queue",
        "to list them: --queue 'trt/*/todo-queue' (or queue_glob in their make)",
    ]


def test_globs_list_matching_keys_and_wrong_types_are_named(r, redis_server, tmp_path):
    config = make_config(
        redis_server.url,
        [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "audit", "set": "seen"}}]}],
    )
    r.set("audit", "not a list")
    now = time.time()
    r.zadd("seen", {"a": now - 150, "b": now})
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
        "trt/p1/todo  scan         3",
        "trt/p2/todo  scan         1  a hash",
        "",
        "TODO QUEUE  TASKS  DELAYED  SET  OLDEST  WORKERS  HELD  FAILED  NOTE",
        "audit           -        0    2   2 min        0     0       0  "
        "audit holds a string, not a list; set seen",
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
        "instances": [],
        "todo": [],
        "truncated_globs": [],
        "not_shown": ["trt/${process_id}/todo-queue"],
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
    r.lpush("trt/plantA/todo-queue", "trt/plantA/2")
    r.zadd("trt/plantA/todo-set", {"trt/plantA/1": 1, "trt/plantA/2": 2})
    r.sadd("trt/plantA/todo-queue/workers", "w1")
    r.set("trt/plantA/todo-queue/heartbeat/w1", "host", px=60_000)
    r.lpush("trt/plantA/todo-queue/taken/w1", "trt/plantA/1")
    r.config_resetstat()
    path = str(example(redis_server, tmp_path))
    done = run_resc("status", path, "--queue", "*", "--json")
    assert done.returncode == 0
    [todo] = json.loads(done.stdout)["todo"]
    assert (todo["queue"], todo["set_size"], todo["workers"][0]["held"]) == (
        "trt/plantA/todo-queue",
        2,
        1,
    )
    used = {name.removeprefix("cmdstat_") for name in r.info("commandstats")}
    connection = {"client|setinfo", "client|setname", "hello", "info", "config|resetstat"}
    assert used - connection == {"type", "llen", "hlen", "scan", "lindex", "zcard", "zrange",
                                 "smembers", "pttl", "lrange"}  # fmt: skip


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
        "resc: --redis: must start with redis://, rediss://, unix://, redis+sentinel://, "
        "rediss+sentinel://, redis+cluster:// or rediss+cluster://\n",
    )


# --- the todo queues, with a real daemon and real workers ---------------------------


def todo_config(url: str) -> dict[str, Any]:
    plant = {"task": "job/${id}", "queue": "trt/${plant}/todo", "set": "trt/${plant}/set",
             "queue_glob": "trt/*/todo"}  # fmt: skip
    rules = [
        {"on": r"^ok/(?P<id>\d+)$",
         "make": {"task": "job/${id}", "queue": "todo", "set": "todo-set"}},
        {"on": r"^plant/(?P<plant>\w+)/(?P<id>\d+)$", "make": plant},
    ]  # fmt: skip
    return make_config(url, [{"input_queue": "in", "rules": rules}])


@contextlib.contextmanager
def busy_workers(url: str) -> Iterator[threading.Event]:
    """w1 on todo (zrem after) holds its first task until released; w2 on trt/A/todo
    fails every task."""
    release = threading.Event()

    def hold(task: str) -> None:
        release.wait(20)

    def fail(task: str) -> None:
        raise TaskFailed("cannot")

    workers = [
        Worker(url, queue="todo", set="todo-set", zrem="after", done_queue=None, handler=hold,
               worker_id="w1", heartbeat_ttl_s=3),
        Worker(url, queue="trt/A/todo", set="trt/A/set", done_queue=None, handler=fail,
               worker_id="w2", heartbeat_ttl_s=3),
    ]  # fmt: skip
    for w in workers:
        w.start()
    try:
        yield release
    finally:
        release.set()
        for w in workers:
            w.stop()
        for w in workers:
            assert w.wait(10)


def test_todo_queues_show_tasks_sets_oldest_task_workers_held_tasks_and_failed(
    r, redis_server, tmp_path, monkeypatch
):
    monkeypatch.setattr(worker_store, "TAKE_BLOCK_S", 0.1)
    conf = todo_config(redis_server.url)
    path = str(write_config(tmp_path, conf))
    # A worker that died holding job/9 on trt/B/todo, an empty queue now.
    r.sadd("trt/B/todo/workers", "ghost")
    r.lpush("trt/B/todo/taken/ghost", "job/9")
    with running(conf, tmp_path), busy_workers(redis_server.url):
        start = time.time()
        r.lpush("in", "ok/1", "ok/2", "ok/3", "plant/A/7")
        wait_until(lambda: r.llen("todo/taken/w1") == 1 and r.llen("trt/A/todo/failed") == 1)
        done = run_resc("status", path, "--json")
        assert (done.returncode, done.stderr) == (0, "")
        data = json.loads(done.stdout)
        todo = {q.pop("queue"): q for q in data["todo"]}
        assert list(todo) == ["todo", "trt/A/todo", "trt/B/todo"]
        age = todo["todo"].pop("oldest_task_age_s")
        assert 0 <= age <= time.time() - start + 1
        w1 = todo["todo"].pop("workers")
        assert todo["todo"] == {"pattern": "todo", "length": 2, "set": "todo-set", "set_size": 3,
                                "failed": 0, "wrong_types": [], "delayed": 0,
                                "next_due": None}  # fmt: skip
        assert [(w["id"], w["alive"], w["held"], w["tasks"]) for w in w1] == [
            ("w1", True, 1, ["job/1"])
        ]
        # Refreshed every second with a 3 s TTL.
        assert 1.0 <= w1[0]["heartbeat_expires_in_s"] <= 3.0
        assert w1[0]["heartbeat_min_age_s"] is None  # not known from one look
        a = todo["trt/A/todo"]
        assert (a["pattern"], a["length"], a["set"], a["set_size"], a["failed"]) == (
            "trt/${plant}/todo", 0, "trt/A/set", 0, 1)  # fmt: skip
        assert a["oldest_task_age_s"] is None
        assert [(w["id"], w["alive"], w["held"]) for w in a["workers"]] == [("w2", True, 0)]
        b = todo["trt/B/todo"]
        assert [(w["id"], w["alive"], w["held"], w["tasks"], w["heartbeat_expires_in_s"])
                for w in b["workers"]] == [("ghost", False, 1, ["job/9"], None)]  # fmt: skip
        assert data["not_shown"] == []

        text = run_resc("status", path).stdout.splitlines()
        workers = next(text[i:] for i, line in enumerate(text) if line.startswith("WORKER "))
        assert [line.split()[:2] for line in workers[1:]] == [
            ["w1", "todo"], ["w2", "trt/A/todo"], ["ghost", "trt/B/todo"]]  # fmt: skip
        assert workers[3].split()[2:] == ["expired", "(dead)", "job/9"]
        assert workers[1].endswith("job/1")
        assert "  expires in " in workers[1]

        # While watching, how long w1 has held job/1 is measured.
        process = resc_process("status", path, "--watch", "--json", "--interval", "0.2")
        assert process.stdout is not None
        try:
            lines = [json.loads(process.stdout.readline())]
            while lines[-1]["time"] - lines[0]["time"] < 0.5:
                lines.append(json.loads(process.stdout.readline()))
        finally:
            process.send_signal(signal.SIGINT)
            process.communicate(timeout=10)

        def w1_of(line: dict[str, Any]) -> dict[str, Any]:
            return line["todo"][0]["workers"][0]

        assert w1_of(lines[0])["oldest_held_min_age_s"] == 0.0
        assert w1_of(lines[-1])["oldest_held_min_age_s"] == lines[-1]["time"] - lines[0]["time"]
        # The longest TTL seen (a refresh sets 3 s) minus what is left, at least.
        longest = max(w1_of(line)["heartbeat_expires_in_s"] for line in lines)
        last = w1_of(lines[-1])
        assert last["heartbeat_min_age_s"] == pytest.approx(
            longest - last["heartbeat_expires_in_s"]
        )
        assert w1_of(lines[0])["heartbeat_min_age_s"] == 0.0


def test_many_todo_queues_are_bounded(r, redis_server, tmp_path):
    path = str(write_config(tmp_path, todo_config(redis_server.url)))
    for n in range(5):
        r.lpush(f"trt/p{n}/todo", "t")
    done = run_resc("status", path, "--json", "--max-keys", "3")
    data = json.loads(done.stdout)
    queues = [q["queue"] for q in data["todo"]]
    # Which three SCAN meets first is Redis's choice.
    assert (queues[0], len(queues), queues == sorted(queues)) == ("todo", 4, True)
    assert set(queues[1:]) < {f"trt/p{n}/todo" for n in range(5)}
    assert data["truncated_globs"] == ["trt/*/todo"]
    text = run_resc("status", path, "--max-keys", "3")
    assert text.stdout.splitlines()[-1] == "more than 3 todo queues match trt/*/todo: 3 shown"


def test_the_instances_of_each_watcher_are_listed_with_heartbeat_age_and_events_in_hand(
    r, redis_server, tmp_path
):
    config = make_config(
        redis_server.url, [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "o"}}]}]
    )
    path = str(write_config(tmp_path, config))
    # A live instance holding two events, refreshed 5 s ago; a dead one holding one.
    beat = json.dumps({"host": "node-1", "pid": 42, "ttl_ms": 15_000, "token": "t"})
    r.set("in/taken/pod-0/heartbeat", beat, px=10_000)
    r.lpush("in/taken/pod-0", "e1", "e2")
    r.lpush("in/taken/pod-1", "e3")
    r.sadd("in/taken/instances", "pod-0", "pod-1")
    done = run_resc("status", path)
    assert (done.returncode, done.stderr) == (0, "")
    lines = done.stdout.splitlines()
    start = lines.index("WATCHER  INSTANCE  HOST             HEARTBEAT" + " " * 45 + "IN HAND")
    # The age grows while resc status starts: 5 s and a little more.
    live = re.fullmatch(r"in {7}pod-0 {5}node-1 \(pid 42\)  ([\d.]+) s ago +2", lines[start + 1])
    assert live is not None, lines[start + 1]
    assert 5 <= float(live[1]) < 15
    assert lines[start + 2] == (
        "in       pod-1     ?                expired (dead: its events go back at the next "
        "sweep)        1"
    )
    data = json.loads(run_resc("status", path, "--json").stdout)
    assert [(i["id"], i["alive"], i["in_hand"], i["host"]) for i in data["instances"]] == [
        ("pod-0", True, 2, "node-1"),
        ("pod-1", False, 1, None),
    ]
    assert 4.5 < data["instances"][0]["heartbeat_age_s"] < 15


def test_a_running_resc_is_listed_as_a_live_instance(r, redis_server, tmp_path):
    config = make_config(
        redis_server.url, [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "o"}}]}]
    )
    path = str(write_config(tmp_path, config))
    process = resc_process("--instance", "pod-7", path)
    try:
        wait_until(lambda: r.exists("in/taken/pod-7/heartbeat"), timeout_s=20)
        data = json.loads(run_resc("status", path, "--json").stdout)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    [instance] = data["instances"]
    assert instance["id"] == "pod-7"
    assert instance["alive"] is True
    assert instance["host"] == socket.gethostname()
    assert instance["pid"] == process.pid
    assert instance["in_hand"] == 0
    assert 0 <= instance["heartbeat_age_s"] < 15
