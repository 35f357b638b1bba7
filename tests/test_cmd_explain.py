"""`resc explain`: what resc would do with events, rule by rule, without Redis."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path

from tests.conftest import make_config, run_resc, write_config

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = "redis://127.0.0.1:1/0"  # never connected to


def two_watchers(tmp_path: Path, service_url: str) -> Path:
    """The first watcher forwards acquisitions to the second, whose rule calls a web
    service; the first also has a rule with an optional group."""
    config = make_config(
        REDIS_URL,
        [
            {
                "input_queue": "global/events",
                "rules": [
                    {"name": "forward", "on": "^acq/", "make": {"queue": "global/slow"}},
                    {
                        "on": r"^opt/(?P<a>\w+)(/(?P<b>\w+))?$",
                        "make": {"task": "${b}", "queue": "q/${a}"},
                    },
                ],
            },
            {
                "input_queue": "global/slow",
                "rules": [
                    {
                        "name": "lookup",
                        "on": r"^acq/(?P<plant>\w+)/(?P<id>\d+)$",
                        "fetch": [
                            {
                                "url": service_url + "/products?plant=${plant}&id=${id}",
                                "returns": "db",
                            }
                        ],
                        "make": [
                            {
                                "task": "trt/${plant}/${db.name}",
                                "queue": "trt/${plant}/todo",
                                "set": "trt/${plant}/set",
                            },
                            {"queue": "audit"},
                        ],
                    }
                ],
            },
        ],
    )
    return write_config(tmp_path, config)


def explain(*args: str) -> list[str]:
    done = run_resc("explain", *args)
    assert (done.returncode, done.stderr) == (0, "")
    return done.stdout.splitlines()


def test_example_config_shows_rule_variables_and_task():
    example = str(ROOT / "configs" / "example.hjson")
    assert explain(example, "acq/plantA/1", "trt/plantA/1") == [
        "event acq/plantA/1",
        "  watchers[0] global/events: 1 task",
        '    rules[0] "compute on acquisition" matches: process_id=plantA product_id=1',
        "      task=trt/plantA/1 queue=trt/plantA/todo-queue set=trt/plantA/todo-set",
        "",
        "event trt/plantA/1",
        "  watchers[0] global/events: no rule matches: no task",
    ]


def test_failing_events_show_the_reason_the_daemon_would_record(tmp_path):
    path = two_watchers(tmp_path, "http://127.0.0.1:1")
    not_utf8 = os.fsdecode(b"opt/\xff")  # given to the child process as the byte 0xFF
    lines = explain(str(path), "opt/x", not_utf8, "--queue", "global/events")
    assert lines == [
        "event opt/x",
        "  watchers[0] global/events: fails, to global/events/failed: variable ${b} has no "
        "value for this event",
        '    rules[1] "<anonymous rule>" matches: a=x (no value: b)',
        "      fails: variable ${b} has no value for this event",
        "",
        "event opt/\\xff",
        "  watchers[0] global/events: fails, to global/events/failed: event is not UTF-8 "
        "text: 'utf-8' codec can't decode byte 0xff in position 4: invalid start byte",
    ]


def test_without_queue_every_watcher_is_shown_and_fetches_are_not_called(tmp_path, web):
    path = two_watchers(tmp_path, web.url)
    assert explain(str(path), "acq/plantA/7") == [
        "event acq/plantA/7",
        "  watchers[0] global/events: 1 task",
        "    rules[0] forward matches: (no groups)",
        "      task=acq/plantA/7 queue=global/slow",
        "  watchers[1] global/slow: 0 tasks known; more may come from the fetches not called "
        "(--fetch calls them)",
        "    rules[0] lookup matches: plant=plantA id=7",
        f"      fetch db: GET {web.url}/products?plant=plantA&id=7 (not called)",
        "      per object: task=trt/plantA/${db.name} queue=trt/plantA/todo set=trt/plantA/set",
        "      per object: task=acq/plantA/7 queue=audit",
    ]
    assert web.paths == []


def test_fetch_calls_the_web_service_and_shows_its_objects_and_tasks(tmp_path, web):
    web.answer("/products?plant=plantA&id=7", [{"name": "bolt", "mass": 1.5}, {"name": "nut"}])
    path = two_watchers(tmp_path, web.url)
    assert explain(str(path), "acq/plantA/7", "--queue", "global/slow", "--fetch") == [
        "event acq/plantA/7",
        "  watchers[1] global/slow: 4 tasks",
        "    rules[0] lookup matches: plant=plantA id=7",
        f"      fetch db: GET {web.url}/products?plant=plantA&id=7: 2 objects",
        "        db.mass=1.5 db.name=bolt",
        "        db.name=nut",
        "      task=trt/plantA/bolt queue=trt/plantA/todo set=trt/plantA/set",
        "      task=acq/plantA/7 queue=audit",
        "      task=trt/plantA/nut queue=trt/plantA/todo set=trt/plantA/set",
        "      task=acq/plantA/7 queue=audit",
    ]
    assert web.paths == ["/products?plant=plantA&id=7"]


def test_a_failing_fetch_fails_the_event(tmp_path, web):
    web.answer("/products?plant=plantA&id=7", {"error": "no such plant"}, status=404)
    path = two_watchers(tmp_path, web.url)
    url = f"{web.url}/products?plant=plantA&id=7"
    assert explain(str(path), "acq/plantA/7", "--queue", "global/slow", "--fetch") == [
        "event acq/plantA/7",
        f"  watchers[1] global/slow: fails, to global/slow/failed: GET {url}: HTTP 404 Not Found",
        "    rules[0] lookup matches: plant=plantA id=7",
        f"      fetch db: GET {url}: failed",
        f"      fails: GET {url}: HTTP 404 Not Found",
    ]


def test_json_output_for_scripts(tmp_path, web):
    web.answer("/products?plant=p&id=1", {"name": "bolt"})
    path = two_watchers(tmp_path, web.url)
    done = run_resc("explain", str(path), "acq/p/1", "--queue", "global/slow", "--fetch", "--json")
    assert done.returncode == 0
    assert json.loads(done.stdout) == [
        {
            "event": "acq/p/1",
            "watchers": [
                {
                    "index": 1,
                    "input_queue": "global/slow",
                    "outcome": "tasks",
                    "failure": None,
                    "failed_queue": "global/slow/failed",
                    "tasks": [
                        {
                            "task": "trt/p/bolt",
                            "queue": "trt/p/todo",
                            "set": "trt/p/set",
                            "rule": "lookup",
                            "due": None,
                        },
                        {
                            "task": "acq/p/1",
                            "queue": "audit",
                            "set": None,
                            "rule": "lookup",
                            "due": None,
                        },
                    ],
                    "rules": [
                        {
                            "index": 0,
                            "name": "lookup",
                            "variables": {"plant": "p", "id": "1"},
                            "fetches": [
                                {
                                    "returns": "db",
                                    "method": "GET",
                                    "url": f"{web.url}/products?plant=p&id=1",
                                    "called": True,
                                    "objects": [{"db.name": "bolt"}],
                                    "error": None,
                                }
                            ],
                            "tasks": [
                                {
                                    "task": "trt/p/bolt",
                                    "queue": "trt/p/todo",
                                    "set": "trt/p/set",
                                    "rule": "lookup",
                                    "due": None,
                                },
                                {
                                    "task": "acq/p/1",
                                    "queue": "audit",
                                    "set": None,
                                    "rule": "lookup",
                                    "due": None,
                                },
                            ],
                            "failure": None,
                        }
                    ],
                }
            ],
        }
    ]


def test_unknown_queue_is_a_usage_error(tmp_path):
    path = two_watchers(tmp_path, "http://127.0.0.1:1")
    done = run_resc("explain", str(path), "x", "--queue", "nope")
    assert (done.returncode, done.stdout, done.stderr) == (
        2,
        "",
        "resc: no watcher takes events from 'nope'; input queues: global/events, global/slow\n",
    )


def test_config_errors_exit_2_without_traceback(tmp_path):
    done = run_resc("explain", str(tmp_path / "nope.hjson"), "x")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith(f"resc: {tmp_path / 'nope.hjson'}: cannot read: ")


def test_a_delayed_task_is_explained_with_its_due_time(tmp_path):
    config = {
        "redis": {"url": "redis://127.0.0.1:1/0"},
        "watchers": [
            {
                "input_queue": "in",
                "rules": [{"on": r"^a(?P<n>\d+)$", "make": {"queue": "q", "delay": "${n}m"}}],
            }
        ],
    }
    path = tmp_path / "conf.json"
    path.write_text(json.dumps(config))
    done = run_resc("explain", str(path), "a5")
    assert done.returncode == 0, done.stderr
    assert "task=a5 queue=q due=20" in done.stdout
    assert "(in 300.0 s)" in done.stdout or "(in 299.9 s)" in done.stdout
    as_json = json.loads(run_resc("explain", "--json", str(path), "a5").stdout)
    (task,) = as_json[0]["watchers"][0]["tasks"]
    assert 299 < datetime.fromisoformat(task["due"]).timestamp() - time.time() <= 300
