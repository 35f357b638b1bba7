"""The reference's flow against a real Redis: every behaviour of "Flow of one event",
"Config file" and its examples."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from pathlib import Path

import redis

from resc.engine.store import SCRIPTS
from tests.conftest import drained, make_config, running, wait_until
from tests.webservice import ScriptedService

EXAMPLE_RULE = {
    "name": "compute on acquisition",
    "on": r"^acq/(?P<process_id>\w+)/(?P<product_id>\w+)$",
    "make": {
        "task": "trt/${process_id}/${product_id}",
        "queue": "trt/${process_id}/todo-queue",
        "set": "trt/${process_id}/todo-set",
    },
}


def example(url: str, **watcher: object) -> dict[str, object]:
    return make_config(
        url,
        [
            {
                "input_queue": "global/events",
                "taken_queue": "global/taken",
                "rules": [EXAMPLE_RULE],
                **watcher,
            }
        ],
    )


def test_simple_rule_turns_an_event_into_a_task(r: redis.Redis, redis_server, tmp_path: Path):
    with running(example(redis_server.url), tmp_path):
        r.lpush("global/events", "acq/plantA/123")
        wait_until(lambda: r.llen("trt/plantA/todo-queue") == 1)
        wait_until(lambda: drained(r, "global/events", "global/taken"))
    assert r.lrange("trt/plantA/todo-queue", 0, -1) == [b"trt/plantA/123"]
    assert r.zrange("trt/plantA/todo-set", 0, -1) == [b"trt/plantA/123"]


def test_unicode_word_characters_match_as_in_the_original(r, redis_server, tmp_path):
    with running(example(redis_server.url), tmp_path):
        r.lpush("global/events", "acq/Zürich/1")
        wait_until(lambda: r.llen("trt/Zürich/todo-queue") == 1)
    assert r.lrange("trt/Zürich/todo-queue", 0, -1) == ["trt/Zürich/1".encode()]


def test_events_are_processed_in_the_order_they_were_pushed(r, redis_server, tmp_path):
    config = make_config(
        redis_server.url,
        [{"input_queue": "in", "batch": 7, "rules": [{"on": "^e", "make": {"queue": "out"}}]}],
    )
    events = [f"e{i}".encode() for i in range(50)]
    r.lpush("in", *events)
    with running(config, tmp_path):
        wait_until(lambda: r.llen("out") == 50)
    # LPUSH order in, LPUSH order out: the oldest task is on the right, like the events.
    assert r.lrange("out", 0, -1)[::-1] == events


def test_default_taken_queue_and_default_task(r, redis_server, tmp_path):
    config = make_config(
        redis_server.url,
        [{"input_queue": "global/events", "rules": [{"on": "^x/", "make": {"queue": "q"}}]}],
    )
    r.lpush("global/events/taken", "x/left-over")  # found by startup recovery
    with running(config, tmp_path):
        r.lpush("global/events", "x/1")
        wait_until(lambda: r.llen("q") == 2)
        wait_until(lambda: drained(r, "global/events", "global/events/taken"))
    assert sorted(r.lrange("q", 0, -1)) == [b"x/1", b"x/left-over"]


def test_events_matching_no_rule_are_removed_without_tasks(r, redis_server, tmp_path):
    with running(example(redis_server.url), tmp_path):
        r.lpush("global/events", "unrelated", "acq/p/1")
        wait_until(lambda: r.llen("trt/p/todo-queue") == 1)
        wait_until(lambda: drained(r, "global/events", "global/taken"))
    assert r.llen("global/events/failed") == 0
    assert sorted(r.keys()) == [b"trt/p/todo-queue", b"trt/p/todo-set"]


def test_multiple_makes_each_push_a_task(r, redis_server, tmp_path):
    rule = {
        "on": r"^acq/(?P<p>\w+)/(?P<n>\d+)$",
        "make": [
            {"task": "a/${n}", "queue": "qa"},
            {"task": "b/${n}", "queue": "qb/${p}", "set": "sb"},
            {"queue": "qc"},
        ],
    }
    config = make_config(redis_server.url, [{"input_queue": "in", "rules": [rule]}])
    with running(config, tmp_path):
        r.lpush("in", "acq/x/7")
        wait_until(lambda: r.llen("qc") == 1)
    assert r.lrange("qa", 0, -1) == [b"a/7"]
    assert r.lrange("qb/x", 0, -1) == [b"b/7"]
    assert r.lrange("qc", 0, -1) == [b"acq/x/7"]
    assert r.zrange("sb", 0, -1) == [b"b/7"]


def test_every_matching_rule_applies_in_config_order(r, redis_server, tmp_path):
    rules = [
        {"name": "first", "on": "^acq/", "make": {"task": "first", "queue": "q"}},
        {"name": "never", "on": "^nope", "make": {"task": "never", "queue": "q"}},
        {"name": "second", "on": "plant", "make": {"task": "second", "queue": "q"}},
    ]
    config = make_config(redis_server.url, [{"input_queue": "in", "rules": rules}])
    with running(config, tmp_path):
        r.lpush("in", "acq/plantA/1")
        wait_until(lambda: r.llen("q") == 2)
    assert r.lrange("q", 0, -1) == [b"second", b"first"]


def test_dedup_skips_a_queued_task_and_requeues_it_after_zrem(r, redis_server, tmp_path):
    with running(example(redis_server.url), tmp_path):
        r.lpush("global/events", "acq/plantA/1", "acq/plantA/1")
        wait_until(lambda: drained(r, "global/events", "global/taken"))
        assert r.lrange("trt/plantA/todo-queue", 0, -1) == [b"trt/plantA/1"]
        # A worker takes the task and removes it from the set: it may be queued again.
        assert r.rpop("trt/plantA/todo-queue") == b"trt/plantA/1"
        r.zrem("trt/plantA/todo-set", "trt/plantA/1")
        r.lpush("global/events", "acq/plantA/1")
        wait_until(lambda: r.llen("trt/plantA/todo-queue") == 1)
    assert r.lrange("trt/plantA/todo-queue", 0, -1) == [b"trt/plantA/1"]


def test_set_member_score_is_the_commit_time_in_whole_seconds(r, redis_server, tmp_path):
    with running(example(redis_server.url), tmp_path):
        before = int(r.time()[0])
        r.lpush("global/events", "acq/p/1")
        wait_until(lambda: r.zcard("trt/p/todo-set") == 1)
        after = int(r.time()[0])
    score = r.zscore("trt/p/todo-set", "trt/p/1")
    assert score == int(score) and before - 1 <= score <= after + 1


def test_listener_channel_messages_in_the_original_format(r, redis_server, tmp_path):
    pubsub = r.pubsub()
    pubsub.subscribe("events")
    wait_until(lambda: pubsub.get_message(timeout=0.1))  # the subscribe confirmation
    config = example(redis_server.url)
    config["listener_channel"] = "events"
    with running(config, tmp_path):
        r.lpush("global/events", "acq/plantA/1", "acq/plantA/1", "other")
        wait_until(lambda: drained(r, "global/events", "global/taken"))
    messages = []
    while (m := pubsub.get_message(timeout=0.5)) is not None:
        messages.append(m["data"])
    pubsub.close()
    assert messages == [
        b"global/taken TRIGGER acq/plantA/1 -> trt/plantA/1",
        b"global/taken DONE acq/plantA/1",
        b"global/taken DONE acq/plantA/1",  # deduplicated: nothing pushed, no TRIGGER
        b"global/taken DONE other",
    ]


def test_no_listener_channel_publishes_nothing(r, redis_server, tmp_path):
    pubsub = r.pubsub()
    pubsub.psubscribe("*")
    wait_until(lambda: pubsub.get_message(timeout=0.1))
    with running(example(redis_server.url), tmp_path):
        r.lpush("global/events", "acq/plantA/1")
        wait_until(lambda: drained(r, "global/events", "global/taken"))
    assert pubsub.get_message(timeout=0.3) is None
    pubsub.close()


def test_two_watchers_forwarding_to_a_slow_fetch_watcher(
    r, redis_server, tmp_path, web: ScriptedService
):
    web.answer("/products/123", {"id": 9, "name": "bolt"})
    config = make_config(
        redis_server.url,
        [
            {
                "input_queue": "global/events",
                "rules": [
                    {"name": "forward", "on": "^acq/", "make": {"queue": "global/to-propagate"}},
                    {
                        "name": "local",
                        "on": r"^acq/(?P<p>\w+)/",
                        "make": {"task": "fast/${p}", "queue": "fast"},
                    },
                ],
            },
            {
                "input_queue": "global/to-propagate",
                "rules": [
                    {
                        "name": "slow",
                        "on": r"^acq/\w+/(?P<product>\d+)$",
                        "fetch": [{"url": web.url + "/products/${product}", "returns": "db"}],
                        "make": {"task": "slow/${db.name}/${db.id}", "queue": "slow"},
                    },
                ],
            },
        ],
    )
    with running(config, tmp_path):
        r.lpush("global/events", "acq/plantA/123")
        wait_until(lambda: r.llen("slow") == 1)
    assert r.lrange("fast", 0, -1) == [b"fast/plantA"]
    assert r.lrange("slow", 0, -1) == [b"slow/bolt/9"]
    assert drained(
        r,
        "global/events",
        "global/events/taken",
        "global/to-propagate",
        "global/to-propagate/taken",
    )


def test_fetch_of_an_array_makes_one_task_per_object(r, redis_server, tmp_path, web):
    web.answer("/lots/plantA", [{"lot": "L1", "weight": 1.5}, {"lot": "L2", "weight": 634876914}])
    rule = {
        "on": r"^acq/(?P<p>\w+)/(?P<n>\d+)$",
        "fetch": [{"url": web.url + "/lots/${p}", "returns": "lots"}],
        "make": {
            "task": "weigh/${n}/${lots.lot}/${lots.weight}",
            "queue": "todo",
            "set": "todo-set",
        },
    }
    config = make_config(redis_server.url, [{"input_queue": "in", "rules": [rule]}])
    with running(config, tmp_path):
        r.lpush("in", "acq/plantA/5")
        wait_until(lambda: r.llen("todo") == 2)
    assert r.lrange("todo", 0, -1) == [b"weigh/5/L2/634876914", b"weigh/5/L1/1.5"]
    assert web.paths == ["/lots/plantA"]


def test_fetch_url_values_are_percent_encoded(r, redis_server, tmp_path, web):
    web.answer("/item/a%2Fb%3Fc%20d", {"ok": True})
    rule = {
        "on": r"^item (?P<name>.+)$",
        "fetch": [{"url": web.url + "/item/${name}", "returns": "x"}],
        "make": {"task": "${x.ok}", "queue": "out"},
    }
    config = make_config(redis_server.url, [{"input_queue": "in", "rules": [rule]}])
    with running(config, tmp_path):
        r.lpush("in", "item a/b?c d")
        wait_until(lambda: r.llen("out") == 1)
    assert web.paths == ["/item/a%2Fb%3Fc%20d"]
    assert r.lrange("out", 0, -1) == [b"true"]


def test_several_fetchers_produce_results_on_their_own(r, redis_server, tmp_path, web):
    web.answer("/a", [{"v": "a1"}, {"v": "a2"}])
    web.answer("/b", {"v": "b1"})
    rule = {
        "on": "^go$",
        "fetch": [{"url": web.url + "/a", "returns": "a"}, {"url": web.url + "/b", "returns": "b"}],
        "make": {"task": "t", "queue": "out"},
    }
    config = make_config(redis_server.url, [{"input_queue": "in", "rules": [rule]}])
    with running(config, tmp_path):
        r.lpush("in", "go")
        wait_until(lambda: r.llen("out") == 3)
        wait_until(lambda: drained(r, "in", "in/taken"))
    assert r.llen("out") == 3  # 2 objects of /a + 1 of /b: no cross product


def test_startup_recovery_processes_taken_events_first_in_order(r, redis_server, tmp_path):
    config = make_config(
        redis_server.url, [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "out"}}]}]
    )
    # As left by a crash: e1, e2 taken (oldest on the right), e3, e4 still waiting.
    r.lpush("in/taken", "e1", "e2")
    r.lpush("in", "e3", "e4")
    with running(config, tmp_path):
        wait_until(lambda: r.llen("out") == 4)
    assert r.lrange("out", 0, -1)[::-1] == [b"e1", b"e2", b"e3", b"e4"]


def test_listener_format_json_publishes_one_object_per_message(r, redis_server, tmp_path):
    pubsub = r.pubsub()
    pubsub.subscribe("events")
    wait_until(lambda: pubsub.get_message(timeout=0.1))
    config = example(redis_server.url)
    archive = {"name": 'archive "it"', "task": "a/${product_id}", "queue": "archive"}
    config["watchers"][0]["rules"] = [{**EXAMPLE_RULE, "make": [EXAMPLE_RULE["make"], archive]}]
    config["listener_channel"] = "events"
    config["listener_format"] = "json"
    with running(config, tmp_path):
        before = float(r.time()[0])
        r.lpush("global/events", "acq/plantA/1")
        wait_until(lambda: drained(r, "global/events", "global/taken"))
    messages = []
    while (m := pubsub.get_message(timeout=0.5)) is not None:
        messages.append(json.loads(m["data"]))
    pubsub.close()
    times = [message.pop("time") for message in messages]
    # A string of unix seconds with all six decimals of microseconds.
    assert all(re.fullmatch(r"\d{10}\.\d{6}", t) for t in times), times
    assert all(before - 1 <= float(t) <= before + 10 for t in times)
    assert messages == [
        {
            "kind": "trigger",
            "event": "acq/plantA/1",
            "task": "trt/plantA/1",
            "queue": "trt/plantA/todo-queue",
            "set": "trt/plantA/todo-set",
            "rule": "compute on acquisition",
            "watcher": "global/events",
            "taken_queue": "global/taken",
        },
        {
            "kind": "trigger",
            "event": "acq/plantA/1",
            "task": "a/1",
            "queue": "archive",
            "rule": "compute on acquisition",
            "make": 'archive "it"',
            "watcher": "global/events",
            "taken_queue": "global/taken",
        },
        {
            "kind": "done",
            "event": "acq/plantA/1",
            "watcher": "global/events",
            "taken_queue": "global/taken",
        },
    ]


def test_scripts_flushed_from_redis_are_loaded_again(r, redis_server, tmp_path):
    config = make_config(
        redis_server.url, [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "out"}}]}]
    )
    with running(config, tmp_path):
        r.lpush("in", "before")
        wait_until(lambda: r.llen("out") == 1)
        r.script_flush()  # NOSCRIPT for resc's next EVALSHA
        r.lpush("in", "after")
        wait_until(lambda: r.llen("out") == 2)
        wait_until(lambda: drained(r, "in", "in/taken"))
    assert r.lrange("out", 0, -1) == [b"after", b"before"]


def test_a_lone_event_is_committed_before_more_events_are_taken(r, redis_server, tmp_path):
    """The event the blocking take brings is committed first, then the take-ahead is
    sent: its task does not wait behind a take (seen in the order Redis ran them)."""
    names = {}
    for name in ("commit", "take"):
        source = SCRIPTS[name]
        for loaded in (source, "#!lua\n" + source):  # Redis 7 gets a shebang
            names[hashlib.sha1(loaded.encode()).hexdigest()] = name
    seen: list[str] = []
    with running(example(redis_server.url), tmp_path):
        wait_until(lambda: any(c.get("cmd") == "blmove" for c in r.client_list()))
        monitor_client = redis.Redis(port=redis_server.port)

        def watch() -> None:
            with monitor_client.monitor() as monitor:
                for command in monitor.listen():
                    words = command["command"].split()
                    if words[0] == "EVALSHA" and words[1] in names:
                        seen.append(names[words[1]])
                    if words[0] == "BLMOVE" and len(seen) >= 2:
                        return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        time.sleep(0.3)  # the monitor is on
        r.lpush("global/events", "acq/plant1/product1")
        wait_until(lambda: r.llen("trt/plant1/todo-queue") == 1)
        watcher.join(10)
    assert seen[:2] == ["commit", "take"]
