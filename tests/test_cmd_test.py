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
