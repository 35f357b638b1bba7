"""`resc failed`: every failed list of a config, the daemon's and the workers', listed,
requeued and deleted against a real Redis while the daemon and workers run."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pty
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from resc.core.failures import FailedRecord, decode, encode
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


@pytest.fixture(autouse=True)
def quick_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_store, "TAKE_BLOCK_S", 0.1)


def config(url: str, **make: Any) -> dict[str, Any]:
    """Events ok/<id> make job/<id> in todo (set todo-set); bad/... fail in the daemon."""
    rules = [
        {
            "on": r"^ok/(?P<id>\d+)$",
            "make": {"task": "job/${id}", "queue": "todo", "set": "todo-set", **make},
        },
        {"on": "^bad/(?P<missing>z)?", "make": {"task": "${missing}", "queue": "todo"}},
    ]
    return make_config(url, [{"input_queue": "in", "rules": rules}])


@contextlib.contextmanager
def worker(server: RedisServer, unlucky: set[str], queue: str = "todo") -> Iterator[list[str]]:
    """A resc.worker on `queue` that fails the tasks named in `unlucky` at once."""
    handled: list[str] = []

    def handle(task: str) -> None:
        if task in unlucky:
            raise TaskFailed("unlucky task")
        handled.append(task)

    w = Worker(
        server.url,
        queue=queue,
        set="todo-set" if queue == "todo" else None,
        done_queue=None,
        handler=handle,
        heartbeat_ttl_s=1.0,
        retry_delay_s=0.01,
    )
    w.start()
    try:
        yield handled
    finally:
        w.stop()
        assert w.wait(10)


def resc_failed(conf: Path, *args: str) -> Any:
    done = run_resc("failed", str(conf), "--json", *args)
    assert (done.returncode, done.stderr) == (0, ""), done
    return json.loads(done.stdout)


def summary(listing: Any) -> dict[str, list[tuple[str, str | None, int | None]]]:
    return {
        fl["name"]: [(i["text"], i["reason"], i["attempts"]) for i in fl["items"]]
        for fl in listing["lists"]
    }


def test_lists_the_daemons_and_the_workers_failed_copies_with_reason_time_attempts(
    r, redis_server, tmp_path
):
    conf = write_config(tmp_path, config(redis_server.url))
    before = time.time()
    with running(config(redis_server.url), tmp_path), worker(redis_server, {"job/13"}):
        r.lpush("in", "ok/12", "bad/1", "ok/13")
        wait_until(lambda: r.llen("in/failed") == 1 and r.llen("todo/failed") == 1)
    # A legacy plain reason and a record are read alike.
    r.lpush("in/failed", "bad/old")
    r.hset("in/failed/reasons", "bad/old", "an old plain reason")
    listing = resc_failed(conf)
    records = {fl["name"]: fl["items"] for fl in listing["lists"]}
    assert sorted(records) == ["in/failed", "todo/failed"]
    [daemon_item, legacy] = records["in/failed"]
    [worker_item] = records["todo/failed"]
    assert legacy == {"text": "bad/old", "reason": "an old plain reason", "time": None,
                      "attempts": None}  # fmt: skip
    assert daemon_item["text"] == "bad/1"
    assert worker_item["text"] == "job/13"
    assert worker_item["reason"].endswith("unlucky task")
    # Today's daemon and worker may still write plain strings: the time is then unknown.
    for item in (daemon_item, worker_item):
        assert item["time"] is None or before <= item["time"] <= time.time()
    [daemon_list, worker_list] = listing["lists"]
    assert (daemon_list["kind"], daemon_list["queue"], daemon_list["length"]) == (
        "watcher",
        "in",
        2,
    )
    assert (worker_list["kind"], worker_list["queue"], worker_list["set"]) == (
        "worker",
        "todo",
        "todo-set",
    )
    text = run_resc("failed", str(conf))
    assert text.returncode == 0
    assert "in/failed (watcher -> in): 2" in text.stdout.splitlines()
    assert "todo/failed (worker -> todo, set todo-set): 1" in text.stdout.splitlines()
    assert "  bad/old  <- an old plain reason  (time n/a)" in text.stdout.splitlines()


def test_requeue_all_while_running_is_bounded_by_what_was_failed_at_the_start(
    r, redis_server, tmp_path
):
    conf = write_config(tmp_path, config(redis_server.url))
    with running(config(redis_server.url), tmp_path), worker(redis_server, {"job/13"}) as done:
        r.lpush("in", *(f"bad/{n}" for n in range(50)), "ok/13", "ok/14")
        wait_until(lambda: r.llen("in/failed") == 50 and r.llen("todo/failed") == 1)
        # Every requeued copy fails again at once: a requeue that followed the list
        # would never end.
        moved = resc_failed(conf, "--requeue", "--all")
        assert {fl["name"]: (fl["requeued"], fl["gone"]) for fl in moved["lists"]} == {
            "in/failed": (50, 0),
            "todo/failed": (1, 0),
        }
        wait_until(lambda: settled(r))
        assert done == ["job/14"]
    # The worker's task was requeued once and failed once more: one copy, one record each.
    assert r.lrange("todo/failed", 0, -1) == [b"job/13"]
    assert len(decode(r.hget("todo/failed/reasons", "job/13"))) == 1
    assert r.hlen("in/failed/reasons") == 50
    assert all(len(decode(v)) == 1 for v in r.hvals("in/failed/reasons"))


def settled(r: redis.Redis) -> bool:
    """Every requeued copy has failed again, and nothing is in hand."""
    return (
        r.llen("in/failed") == 50
        and r.llen("todo/failed") == 1
        and all(r.llen(q) == 0 for q in ("in", "in/taken", "todo"))
        and not list(r.scan_iter("todo/taken/*"))
    )


def test_a_requeued_worker_task_goes_back_into_its_set_and_not_twice(r, redis_server, tmp_path):
    conf = write_config(tmp_path, config(redis_server.url))
    r.lpush("todo/failed", "job/1", "job/2")
    r.hset("todo/failed/reasons", mapping={"job/1": "x", "job/2": "y"})
    # job/2 was made again meanwhile: it is queued, so requeuing adds no second copy.
    r.zadd("todo-set", {"job/2": 5})
    r.lpush("todo", "job/2")
    moved = resc_failed(conf, "--requeue", "--all", "--list", "todo/failed")
    assert moved["lists"] == [
        {"name": "todo/failed", "requeued": 1, "already_queued": 1, "gone": 0}
    ]
    assert r.lrange("todo", 0, -1) == [b"job/1", b"job/2"]
    assert r.zscore("todo-set", "job/2") == 5
    assert abs(r.zscore("todo-set", "job/1") - time.time()) < 5
    assert r.exists("todo/failed", "todo/failed/reasons") == 0
    text = run_resc("failed", str(conf), "--requeue", "--all")
    assert (text.returncode, text.stdout.splitlines()[-1]) == (
        0,
        "todo/failed: 0 moved back to todo",
    )


def test_requeue_by_reason_or_text_regex_takes_the_oldest_record_with_each_copy(
    r, redis_server, tmp_path
):
    conf = write_config(tmp_path, config(redis_server.url))
    # Two copies of bad/1: the older failed on HTTP 503, the newer on 404.
    r.lpush("in/failed", "bad/1", "bad/2", "bad/1")
    r.hset("in/failed/reasons", "bad/1", encode([FailedRecord("HTTP 503", 100.0, 1),
                                                FailedRecord("HTTP 404", 200.0, 2)]))  # fmt: skip
    r.hset("in/failed/reasons", "bad/2", encode([FailedRecord("HTTP 503", 150.0, 1)]))
    r.hset("in/taken/attempts", "bad/2", 3)
    listing = resc_failed(conf, "--reason", "503")
    assert summary(listing)["in/failed"] == [("bad/1", "HTTP 503", 1), ("bad/2", "HTTP 503", 1)]
    moved = resc_failed(conf, "--requeue", "--reason", "50[0-9]", "--match", "2$")
    assert moved["lists"][0] == {"name": "in/failed", "requeued": 1, "already_queued": 0, "gone": 0}
    assert r.lrange("in", 0, -1) == [b"bad/2"]
    # A requeued event starts afresh: its interruptions are forgotten.
    assert r.hget("in/taken/attempts", "bad/2") is None
    resc_failed(conf, "--requeue", "--item", "bad/1")
    assert r.lrange("in", 0, -1) == [b"bad/1", b"bad/1", b"bad/2"]
    assert r.exists("in/failed", "in/failed/reasons") == 0


def test_deleting_one_copy_keeps_the_newer_records(r, redis_server, tmp_path):
    conf = write_config(tmp_path, config(redis_server.url))
    r.lpush("in/failed", "bad/1", "bad/1")
    r.hset("in/failed/reasons", "bad/1", encode([FailedRecord("first", 1.0, 1),
                                                FailedRecord("second", 2.0, 2)]))  # fmt: skip
    done = run_resc("failed", str(conf), "--delete", "--item", "bad/1")
    assert done.returncode == 2
    assert "needs confirmation: run it on a terminal, or add --yes" in done.stderr
    assert r.llen("in/failed") == 2
    deleted = resc_failed(conf, "--delete", "--reason", "^first$", "--yes")
    assert deleted["lists"][0] == {"name": "in/failed", "deleted": 1, "gone": 0}
    assert r.lrange("in/failed", 0, -1) == [b"bad/1"]
    assert decode(r.hget("in/failed/reasons", "bad/1")) == [FailedRecord("second", 2.0, 2)]
    text = run_resc("failed", str(conf), "--delete", "--all", "--yes")
    assert text.stdout.splitlines() == ["in/failed: 1 deleted", "todo/failed: 0 deleted"]
    assert r.exists("in/failed", "in/failed/reasons") == 0


def test_queues_named_with_variables_are_found_by_glob(r, redis_server, tmp_path):
    watcher = {
        "input_queue": "in",
        "rules": [
            {
                "on": r"^ok/(?P<plant>\w+)/(?P<id>\d+)$",
                "make": {
                    "task": "job/${id}",
                    "queue": "trt/${plant}/todo",
                    "set": "trt/${plant}/set",
                },
            }
        ],
    }
    conf = write_config(tmp_path, make_config(redis_server.url, [watcher]))
    with worker(redis_server, {"job/1"}, queue="trt/A/todo"):
        r.lpush("trt/A/todo", "job/1")
        wait_until(lambda: r.llen("trt/A/todo/failed") == 1)
    r.lpush("trt/B/todo/failed", "job/2")
    assert sorted(summary(resc_failed(conf))) == ["in/failed"]
    found = resc_failed(conf, "--queue", "trt/*/todo")
    assert [(fl["name"], fl["queue"], fl["set"]) for fl in found["lists"]] == [
        ("in/failed", "in", None),
        ("trt/A/todo/failed", "trt/A/todo", "trt/A/set"),
        ("trt/B/todo/failed", "trt/B/todo", "trt/B/set"),
    ]
    resc_failed(conf, "--queue", "trt/*/todo", "--requeue", "--all")
    assert r.lrange("trt/B/todo", 0, -1) == [b"job/2"]
    assert r.zrange("trt/B/set", 0, -1) == [b"job/2"]
    assert r.lrange("trt/A/todo", 0, -1) == [b"job/1"]
    # The same glob in the config.
    r.lpush("trt/A/todo/failed", "job/3")
    watcher["rules"][0]["make"]["queue_glob"] = "trt/*/todo"
    conf = write_config(tmp_path, make_config(redis_server.url, [watcher]))
    assert sorted(summary(resc_failed(conf))) == ["in/failed", "trt/A/todo/failed"]
    r.lpush("trt/B/todo/failed", "job/3")
    bounded = run_resc("failed", str(conf), "--max-keys", "1")
    assert bounded.returncode == 0
    assert "more than 1 failed lists match trt/*/todo/failed" in bounded.stderr


# Many resc processes, each a message: the server changes none of them.
@pytest.mark.slow
def test_user_errors_are_clear_messages(r, redis_server, tmp_path):
    conf = write_config(tmp_path, config(redis_server.url))
    cases = [
        (["--requeue"], 2, "say which copies: --all, --item TEXT, --match REGEX or --reason"),
        (["--requeue", "--all", "--match", "x"], 2, "--all selects every copy"),
        (["--match", "(unclosed"], 2, "--match: invalid regex"),
        (["--list", "nope"], 2, "no failed list 'nope' (found: in/failed, todo/failed)"),
    ]
    for args, status, message in cases:
        done = run_resc("failed", str(conf), *args)
        assert (done.returncode, message in done.stderr, "Traceback" in done.stderr) == (
            status,
            True,
            False,
        ), done
    r.set("in/failed", "not a list")
    done = run_resc("failed", str(conf))
    assert done.returncode == 1
    assert done.stderr == "resc: in/failed holds a string, not a list\n"
    r.delete("in/failed")
    r.lpush("in/failed", "bad/1")
    r.set("in", "not a list")
    done = run_resc("failed", str(conf), "--requeue", "--all")
    assert (done.returncode, "in holds a string, not a list" in done.stderr) == (1, True)
    assert r.lrange("in/failed", 0, -1) == [b"bad/1"]


def test_redis_down_is_a_clear_message(tmp_path):
    from resc.dev.embedded import free_port

    conf = write_config(tmp_path, config(f"redis://:secret@127.0.0.1:{free_port()}/0"))
    done = run_resc("failed", str(conf))
    assert done.returncode == 1
    assert "connection lost" in done.stderr or "Connection refused" in done.stderr
    assert "secret" not in done.stderr and "Traceback" not in done.stderr


def test_two_requeues_at_once_move_each_copy_once(r, redis_server, tmp_path):
    conf = write_config(tmp_path, config(redis_server.url))
    texts = [f"bad/{n}" for n in range(300)]
    r.lpush("in/failed", *texts, *texts)  # every text twice
    r.hset("in/failed/reasons", mapping={t: encode([FailedRecord("a"), FailedRecord("b")])
                                         for t in texts})  # fmt: skip
    processes = [
        resc_process("failed", str(conf), "--requeue", "--all", "--json") for _ in range(2)
    ]
    outcomes = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=60)
        assert (process.returncode, stderr) == (0, "")
        [outcome] = json.loads(stdout)["lists"][:1]
        outcomes.append(outcome)
    assert sum(o["requeued"] for o in outcomes) == 600
    # What one moved, the other found gone (or never saw, when its snapshot came later).
    assert all(o["requeued"] + o["gone"] <= 600 for o in outcomes)
    assert sorted(r.lrange("in", 0, -1)) == sorted([t.encode() for t in texts] * 2)
    assert r.exists("in/failed", "in/failed/reasons") == 0


def test_a_binary_copy_is_listed_escaped_and_requeued_byte_for_byte(r, redis_server, tmp_path):
    conf = write_config(tmp_path, config(redis_server.url))
    r.lpush("in/failed", b"bad/\xff\x00")
    r.hset("in/failed/reasons", b"bad/\xff\x00", "not UTF-8")
    listing = resc_failed(conf)
    assert summary(listing)["in/failed"] == [("bad/\\xff\x00", "not UTF-8", None)]
    resc_failed(conf, "--requeue", "--match", "^bad/")
    assert r.lrange("in", 0, -1) == [b"bad/\xff\x00"]


def test_delete_asks_on_a_terminal(r, redis_server, tmp_path):
    conf = write_config(tmp_path, config(redis_server.url))
    for answer, left in ((b"n\n", 2), (b"y\n", 0)):
        r.delete("in/failed")
        r.lpush("in/failed", "bad/1", "bad/2")
        leader, follower = pty.openpty()
        process = resc_process("failed", str(conf), "--delete", "--all", stdin=follower)
        os.close(follower)
        try:
            os.write(leader, answer)
            stdout, stderr = process.communicate(timeout=30)
        finally:
            os.close(leader)
        assert stdout.startswith("Delete 2 failed copies for good? [y/N] ")
        assert r.llen("in/failed") == left
        assert (process.returncode, stderr) == ((2, "resc: nothing deleted\n") if left else (0, ""))


def test_redis_lost_midway_says_how_far_it_went(tmp_path, monkeypatch, capsys):
    from resc.commands import failed as command
    from resc.ops import failed

    server = RedisServer(tmp_path)
    server.start()
    client = server.client()
    conf = write_config(tmp_path, config(server.url))
    client.lpush("in/failed", *(f"bad/{n}" for n in range(10)))
    calls = []
    original = failed.FailedStore.__init__

    def init(self: failed.FailedStore, url: str) -> None:
        original(self, url)
        script = self._scripts["requeue_failed"]

        def killing_after_three(**kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) == 4:
                server.kill()
            return script(**kwargs)

        self._scripts["requeue_failed"] = killing_after_three  # type: ignore[assignment]

    monkeypatch.setattr(failed.FailedStore, "__init__", init)
    try:
        # In this process (to reach the script), without resc.cli's logging set-up.
        parser = argparse.ArgumentParser()
        command.add_arguments(parser)
        assert command.main(parser.parse_args([str(conf), "--requeue", "--all"])) == 1
    finally:
        client.close()
        server.close()
    out, err = capsys.readouterr()
    assert out.splitlines() == ["in/failed: 3 moved back to in"]
    assert err.startswith("resc: stopped: moving a copy from in/failed back to in: connection lost")
