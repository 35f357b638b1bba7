"""`resc test`: config unit tests from test files and the config's `tests:`, with stubbed
web services."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from tests.conftest import make_config, run_resc, write_config

ROOT = Path(__file__).resolve().parent.parent
SERVICE = "http://db.invalid"  # never called: every answer is stubbed


def config_with(tests: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    config = make_config(
        "redis://127.0.0.1:1/0",
        [
            {
                "input_queue": "global/events",
                "rules": [
                    {
                        "on": r"^opt/(?P<a>\w+)(/(?P<b>\w+))?$",
                        "make": {"task": "${b}", "queue": "q/${a}"},
                    }
                ],
            },
            {
                "input_queue": "global/slow",
                "rules": [
                    {
                        "on": r"^acq/(?P<plant>\w+)/(?P<id>\d+)$",
                        "fetch": [{"url": SERVICE + "/p?plant=${plant}&id=${id}", "returns": "db"}],
                        "make": {"task": "trt/${db.name}", "queue": "todo", "set": "dedup"},
                    }
                ],
            },
        ],
    )
    return config if tests is None else {**config, "tests": tests}


def write_tests(tmp_path: Path, text: str, name: str = "cases.hjson") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def test_example_config_tests_are_found_next_to_it_and_pass():
    done = run_resc("test", str(ROOT / "configs" / "example.hjson"))
    assert (done.returncode, done.stderr) == (0, "")
    tests = ROOT / "configs" / "example.tests.hjson"
    assert done.stdout.splitlines() == [
        f"PASS {tests}:6 an acquisition makes a deduplicated todo task",
        f"PASS {tests}:19 word characters are Unicode-aware, as in the original",
        f"PASS {tests}:30 a finished task is an event that makes nothing more",
        f"PASS {tests}:35 the regex is anchored, so a longer path is not an acquisition",
        f"PASS {tests}:40 an event that is not UTF-8 goes to the failed queue",
        "5 passed",
    ]


CASES = f"""
{{
  tests: [
    {{
      name: stubbed answers make one task per object
      queue: global/slow
      event: acq/plantA/1
      fetch: {{
        "{SERVICE}/p?plant=plantA&id=1": [{{ "name": "bolt" }}, {{ "name": 2.50 }}]
      }}
      expect: [
        {{ task: "trt/2.5", queue: "todo", set: "dedup" }}
        {{ task: "trt/bolt", queue: "todo", set: "dedup" }}
      ]
    }}
    {{
      name: wrong task
      queue: global/slow
      event: acq/plantA/1
      fetch: {{ "{SERVICE}/p?plant=plantA&id=1": {{ "name": "nut" }} }}
      expect: {{ task: "trt/bolt", queue: "todo", set: "dedup" }}
    }}
    {{
      queue: global/slow
      event: acq/plantA/2
      expect: []
    }}
    {{
      name: an answer that is not an object fails the event
      queue: global/slow
      event: acq/plantA/1
      fetch: {{ "{SERVICE}/p?plant=plantA&id=1": "oops" }}
      expect_failure: "bad response"
    }}
    {{
      name: expected tasks, but the event fails
      queue: global/events
      event: opt/x
      expect: {{ task: "x", queue: "q/x" }}
    }}
    {{
      name: expected a failure, but the event makes a task
      queue: global/events
      event: opt/x/y
      expect_failure: "no value"
    }}
    {{
      name: another failure than expected
      queue: global/events
      event: opt/x
      expect_failure: "not UTF-8"
    }}
  ]
}}
"""


def test_each_case_passes_or_fails_with_a_diff(tmp_path):
    config = write_config(tmp_path, config_with())
    cases = write_tests(tmp_path, CASES)
    done = run_resc("test", str(config), str(cases))
    assert (done.returncode, done.stderr) == (1, "")
    assert done.stdout.splitlines() == [
        f"PASS {cases}:3 stubbed answers make one task per object",
        f"FAIL {cases}:15 wrong task",
        "    tasks differ (- expected, not made; + made, not expected):",
        "      - task=trt/bolt queue=todo set=dedup",
        "      + task=trt/nut queue=todo set=dedup",
        f"FAIL {cases}:22 event acq/plantA/2",
        f"    GET {SERVICE}/p?plant=plantA&id=2 has no answer in this case's fetch (stubbed: none)",
        f"PASS {cases}:27 an answer that is not an object fails the event",
        f"FAIL {cases}:34 expected tasks, but the event fails",
        "    the event fails: variable ${b} has no value for this event",
        "      - task=x queue=q/x",
        f"FAIL {cases}:40 expected a failure, but the event makes a task",
        "    expected a failure with 'no value', but the event makes 1 task:",
        "      + task=y queue=q/x",
        f"FAIL {cases}:46 another failure than expected",
        "    expected a failure with 'not UTF-8', got: variable ${b} has no value for this event",
        "2 passed, 5 failed",
    ]


def test_cases_in_the_config_run_and_the_daemon_accepts_them(tmp_path):
    tests = [
        {"queue": "global/events", "event": "opt/x/y", "expect": [{"task": "y", "queue": "q/x"}]}
    ]
    config = write_config(tmp_path, config_with(tests))
    done = run_resc("test", str(config))
    assert (done.returncode, done.stdout) == (0, f"PASS {config}:39 event opt/x/y\n1 passed\n")
    checked = run_resc("check", str(config))
    assert (checked.returncode, checked.stdout) == (0, f"{config}: OK\n")


def test_malformed_cases_are_located_errors_with_exit_2(tmp_path):
    config = write_config(tmp_path, config_with())
    cases = write_tests(
        tmp_path,
        """
        tests: [
          { "queue": "global/events", "event": "opt/x" }
          { "queue": "global/events", "event": "opt/x", "expect": [{ "task": "x" }] }
        ]
        """,
    )
    done = run_resc("test", str(config), str(cases))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines() == [
        f"resc: {cases}:2: tests[0]: a case needs either expect (the tasks, [] for none) or "
        f"expect_failure (part of the failure reason)",
        f"resc: {cases}:3: tests[1].expect[0].queue: required field is missing",
    ]


def test_a_case_must_name_an_input_queue_of_the_config(tmp_path):
    config = write_config(tmp_path, config_with())
    cases = write_tests(
        tmp_path,
        """
        tests: [
          { "event": "opt/x", "expect": [] }
          { "queue": "nope", "event": "opt/x", "expect": [] }
        ]
        """,
    )
    done = run_resc("test", str(config), str(cases))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines() == [
        f"resc: {cases}:2: tests[0]: queue is required: the config has 2 watchers (input "
        f"queues: global/events, global/slow)",
        f"resc: {cases}:3: tests[1].queue: no watcher takes events from 'nope'; input queues: "
        f"global/events, global/slow",
    ]


def test_no_cases_at_all_is_an_error(tmp_path):
    config = write_config(tmp_path, config_with())
    done = run_resc("test", str(config))
    assert (done.returncode, done.stdout, done.stderr) == (
        2,
        "",
        f"resc: {config}: no test cases: the config has no tests: and no test file was given "
        f"or found (conf.tests.hjson next to it)\n",
    )


def test_a_test_file_must_hold_an_object(tmp_path):
    config = write_config(tmp_path, config_with())
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps([{"event": "x", "expect": []}]))
    done = run_resc("test", str(config), str(cases))
    assert (done.returncode, done.stderr) == (
        2,
        f"resc: {cases}: a test file is an object: {{ tests: [ ... ] }}\n",
    )


# --- cases committed to an in-memory Redis --------------------------------------------


def commit_config(**top: Any) -> dict[str, Any]:
    """One watcher: `build/<x>` makes task x in todo, deduplicated by the set dedup;
    `queue/<x>` pushes x into the key k, `set/<x>` uses k as a set; `both/<x>` uses k as
    both; `twice/<id>` fetches and makes one deduplicated task per object."""
    return make_config(
        "redis://127.0.0.1:1/0",
        [
            {
                "input_queue": "in",
                "rules": [
                    {
                        "name": "build",
                        "on": r"^build/(?P<x>\w+)$",
                        "make": {"task": "${x}", "queue": "todo", "set": "dedup"},
                    },
                    {"on": r"^(queue|both)/(?P<x>\w+)$", "make": {"task": "${x}", "queue": "k"}},
                    {
                        "on": r"^(set|both)/(?P<x>\w+)$",
                        "make": {"task": "${x}", "queue": "other", "set": "k"},
                    },
                    {
                        "on": r"^twice/(?P<id>\d+)$",
                        "fetch": [{"url": SERVICE + "/t/${id}", "returns": "db"}],
                        "make": {"task": "${db.name}", "queue": "todo", "set": "dedup"},
                    },
                ],
            }
        ],
        **top,
    )


def run_cases(tmp_path: Path, config: dict[str, Any], text: str) -> tuple[Path, Any]:
    path = write_config(tmp_path, config)
    cases = write_tests(tmp_path, text)
    return cases, run_resc("test", str(path), str(cases))


def test_a_second_event_is_deduplicated_by_the_set_the_first_filled(tmp_path):
    cases, done = run_cases(
        tmp_path,
        commit_config(),
        """
        tests: [
          {
            name: the same build twice makes one task
            events: [
              { event: "build/a", expect: { task: "a", queue: "todo", set: "dedup" } }
              {
                event: build/a
                expect: { task: "a", queue: "todo", set: "dedup", deduplicated: true }
              }
              { event: "build/b", expect: { task: "b", queue: "todo", set: "dedup" } }
            ]
          }
          {
            name: each case has a Redis of its own
            event: build/a
            expect: { task: "a", queue: "todo", set: "dedup" }
          }
          {
            events: [
              { event: "build/a", expect: { task: "a", queue: "todo", set: "dedup" } }
              { event: "build/a", expect: { task: "a", queue: "todo", set: "dedup" } }
            ]
          }
        ]
        """,
    )
    assert (done.returncode, done.stderr) == (1, "")
    assert done.stdout.splitlines() == [
        f"PASS {cases}:2 the same build twice makes one task",
        f"PASS {cases}:13 each case has a Redis of its own",
        f"FAIL {cases}:18 events build/a, build/a",
        "    events[1] build/a:",
        "      tasks differ (- expected, not made; + made, not expected):",
        "        - task=a queue=todo set=dedup",
        "        + task=a queue=todo set=dedup (deduplicated)",
        "2 passed, 1 failed",
    ]


def test_the_same_task_twice_from_one_event_is_pushed_once(tmp_path):
    cases, done = run_cases(
        tmp_path,
        commit_config(),
        f"""
        tests: [
          {{
            event: twice/1
            fetch: {{ "{SERVICE}/t/1": [{{ "name": "n" }}, {{ "name": "n" }}] }}
            expect: [
              {{ task: "n", queue: "todo", set: "dedup" }}
              {{ task: "n", queue: "todo", set: "dedup", deduplicated: true }}
            ]
          }}
        ]
        """,
    )
    assert (done.returncode, done.stdout) == (0, f"PASS {cases}:2 event twice/1\n1 passed\n")


def test_a_key_used_as_a_queue_then_as_a_set_fails_the_later_event(tmp_path):
    cases, done = run_cases(
        tmp_path,
        commit_config(),
        """
        tests: [
          {
            events: [
              { event: "queue/a", expect: { task: "a", queue: "k" } }
              { event: "set/b", expect_failure: "key k holds a list" }
              # The failed event pushed nothing: the set k is still free for later events.
              { event: "queue/c", expect: { task: "c", queue: "k" } }
            ]
          }
          { event: "both/a", expect_failure: "k would be used both as a todo queue and as a set" }
          { events: [{ event: "queue/a", expect: [] }, { event: "set/b", expect: [] }] }
        ]
        """,
    )
    assert (done.returncode, done.stderr) == (1, "")
    assert done.stdout.splitlines() == [
        f"PASS {cases}:2 events queue/a, set/b, queue/c",
        f"PASS {cases}:10 event both/a",
        f"FAIL {cases}:11 events queue/a, set/b",
        "    events[0] queue/a:",
        "      tasks differ (- expected, not made; + made, not expected):",
        "        + task=a queue=k",
        "    events[1] set/b:",
        "      the event fails: key k holds a list",
        "2 passed, 1 failed",
    ]


def test_an_unstubbed_fetch_names_its_event_and_ends_the_case(tmp_path):
    cases, done = run_cases(
        tmp_path,
        commit_config(),
        """
        tests: [
          {
            events: [
              { event: "build/a", expect: { task: "a", queue: "todo", set: "dedup" } }
              { event: "twice/2", expect: [] }
              { event: "build/b", expect: [] }
            ]
          }
        ]
        """,
    )
    assert (done.returncode, done.stderr) == (1, "")
    assert done.stdout.splitlines() == [
        f"FAIL {cases}:2 events build/a, twice/2, build/b",
        "    events[1] twice/2:",
        f"      GET {SERVICE}/t/2 has no answer in this case's fetch (stubbed: none)",
        "0 passed, 1 failed",
    ]


def test_listener_messages_in_the_text_format(tmp_path):
    cases, done = run_cases(
        tmp_path,
        commit_config(listener_channel="resc"),
        """
        tests: [
          {
            events: [
              {
                event: build/a
                expect: { task: "a", queue: "todo", set: "dedup" }
                expect_messages: ["in/taken TRIGGER build/a -> a", "in/taken DONE build/a"]
              }
              {
                event: build/a
                expect: { task: "a", queue: "todo", set: "dedup", deduplicated: true }
                expect_messages: ["in/taken DONE build/a"]
              }
              { event: "nothing", expect: [], expect_messages: ["in/taken DONE nothing"] }
              {
                event: "set/b"
                expect: { task: "b", queue: "other", set: "k" }
                expect_messages: []
              }
            ]
          }
        ]
        """,
    )
    assert (done.returncode, done.stderr) == (1, "")
    assert done.stdout.splitlines() == [
        f"FAIL {cases}:2 events build/a, build/a, nothing, set/b",
        "    events[3] set/b:",
        "      listener messages differ (- expected, + published):",
        "        + in/taken TRIGGER set/b -> b",
        "        + in/taken DONE set/b",
        "0 passed, 1 failed",
    ]


def test_listener_messages_in_the_json_format_compare_the_fields_given(tmp_path):
    cases, done = run_cases(
        tmp_path,
        commit_config(listener_channel="resc", listener_format="json"),
        """
        tests: [
          {
            event: build/a
            expect: { task: "a", queue: "todo", set: "dedup" }
            expect_messages: [
              {
                kind: "trigger", event: "build/a", task: "a", queue: "todo", set: "dedup"
                rule: "build"
              }
              { kind: "done", event: "build/a", watcher: "in", taken_queue: "in/taken" }
            ]
          }
          {
            event: "\\udcff"
            expect_failure: not UTF-8
            expect_messages: [{ kind: "trigger" }]
          }
        ]
        """,
    )
    assert (done.returncode, done.stderr) == (1, "")
    assert done.stdout.splitlines() == [
        f"PASS {cases}:2 event build/a",
        f"FAIL {cases}:13 event \\xff",
        "    listener messages differ (- expected, + published):",
        '      - {"kind": "trigger"}',
        "1 passed, 1 failed",
    ]


def test_malformed_multi_event_cases_are_located_errors(tmp_path):
    cases, done = run_cases(
        tmp_path,
        commit_config(),
        """
        tests: [
          { event: "build/a", events: [{ event: "build/a", expect: [] }] }
          { events: [{ event: "build/a", expect: [] }], expect: [] }
          { events: [] }
          { expect: [] }
          { events: [{ event: "build/a" }] }
          { event: "build/a", expect: [{ task: "a", queue: "todo", deduplicated: true }] }
        ]
        """,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines() == [
        f"resc: {cases}:2: tests[0]: a case has either event or events, not both",
        f"resc: {cases}:3: tests[1]: with events, each event has its own expect or expect_failure",
        f"resc: {cases}:4: tests[2].events: List should have at least 1 item after validation, "
        f"not 0",
        f"resc: {cases}:5: tests[3]: a case needs an event (or events: for several)",
        f"resc: {cases}:6: tests[4].events[0]: a case needs either expect (the tasks, [] for "
        f"none) or expect_failure (part of the failure reason)",
        f"resc: {cases}:7: tests[5].expect[0]: deduplicated: a task without set is never "
        f"deduplicated",
    ]


def test_expected_messages_need_a_listener_channel(tmp_path):
    cases, done = run_cases(
        tmp_path,
        commit_config(),
        """
        tests: [
          { event: "build/a", expect: [], expect_messages: [] }
          { events: [{ event: "x", expect: [] }, { event: "y", expect: [], expect_messages: [] }] }
        ]
        """,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines() == [
        f"resc: {cases}:2: tests[0]: expect_messages: the config has no listener_channel, so "
        f"no message is published",
        f"resc: {cases}:3: tests[1]: expect_messages: the config has no listener_channel, so "
        f"no message is published",
    ]
