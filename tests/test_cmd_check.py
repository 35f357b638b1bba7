"""`resc check`: the daemon's checks, warnings with file, line and field path, exit status."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.conftest import run_resc

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "conf.hjson") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def one_watcher(rules: str) -> str:
    """A config whose only watcher has these rules (Hjson lines, at any indent); the
    rules start on line 7."""
    body = textwrap.indent(textwrap.dedent(rules).strip("\n"), " " * 8)
    return (
        '{\n  redis: { url: "redis://127.0.0.1/" }\n  watchers: [\n    {\n'
        f"      input_queue: global/events\n      rules: [\n{body}\n      ]\n    }}\n  ]\n}}\n"
    )


def check(path: Path, *options: str) -> tuple[int, list[str]]:
    done = run_resc("check", str(path), *options)
    assert done.stderr == ""
    return done.returncode, done.stdout.splitlines()


def test_example_config_is_ok():
    path = ROOT / "configs" / "example.hjson"
    assert check(path) == (0, [f"{path}: OK"])


def test_errors_are_the_daemons_located_messages_with_exit_2(tmp_path):
    path = write(
        tmp_path,
        one_watcher("""
            {
              on: ^acq/(?P<p>\\w+)$
              make: { queue: "q/${product}" }
              colour: red
            }
        """),
    )
    assert check(path) == (
        2,
        [
            f"error: {path}:10: watchers[0].rules[0].colour: unknown field",
            f"{path}: 1 error",
        ],
    )
    path.write_text(path.read_text().replace("      colour: red\n", ""))
    assert check(path) == (
        2,
        [
            f"error: {path}:9: watchers[0].rules[0].make.queue: ${{product}} is not a variable "
            f"of this rule; it has: input_task, p",
            f"{path}: 1 error",
        ],
    )


def test_unreadable_file_is_an_error(tmp_path):
    assert check(tmp_path / "nope.json") == (
        2,
        [
            f"error: {tmp_path / 'nope.json'}: cannot read: No such file or directory",
            f"{tmp_path / 'nope.json'}: 1 error",
        ],
    )


def test_same_regex_fires_together_and_an_identical_rule_makes_tasks_twice(tmp_path):
    path = write(
        tmp_path,
        one_watcher("""
            {
              name: first
              on: ^acq/(?P<p>\\w+)$
              make: { queue: "a/${p}" }
            }
            {
              on: ^acq/(?P<p>\\w+)$
              make: { queue: "b/${p}" }
            }
            {
              name: copy
              on: ^acq/(?P<p>\\w+)$
              make: { queue: "b/${p}" }
            }
        """),
    )
    assert check(path) == (
        0,
        [
            f"warning: {path}:13: watchers[0].rules[1].on: same regex as rules[0] (first): "
            f"every matching rule applies, so these two always fire together",
            f"warning: {path}:18: watchers[0].rules[2].on: identical to rules[1] apart from its "
            f"name: each of their tasks is made twice (pushed twice unless a set deduplicates it)",
            f"{path}: OK, 2 warnings",
        ],
    )


def test_strict_makes_warnings_exit_1(tmp_path):
    path = write(
        tmp_path,
        one_watcher("""
            { on: "x", make: { queue: "a" } }
            { on: "x", make: { queue: "b" } }
        """),
    )
    code, lines = check(path, "--strict")
    assert (code, lines[-1]) == (1, f"{path}: 1 warning, failing with --strict")


def test_a_set_used_with_two_queues_and_a_set_that_is_a_queue(tmp_path):
    path = write(
        tmp_path,
        one_watcher("""
            {
              on: ^a/(?P<p>\\w+)$
              make: [
                { queue: "todo/${p}", set: "dedup/${p}" }
                { queue: "other/${p}", set: "dedup/${p}" }
                { queue: "plain", set: "todo/${p}" }
              ]
            }
        """),
    )
    assert check(path) == (
        0,
        [
            f"warning: {path}:11: watchers[0].rules[0].make[1].set: set 'dedup/${{p}}' is also "
            f"used with queue 'todo/${{p}}' (watchers[0].rules[0].make[0]): a task waiting in "
            f"one of the queues is not pushed to the other; give each queue its own set",
            f"warning: {path}:12: watchers[0].rules[0].make[2].set: 'todo/${{p}}' is also a "
            f"queue (watchers[0].rules[0].make[0].queue): a key cannot be both a list and a "
            f"sorted set; events that use both fail",
            f"{path}: OK, 2 warnings",
        ],
    )


LOOP = """
{
  redis: { url: "redis://127.0.0.1/" }
  watchers: [
    {
      input_queue: global/events
      rules: [
        {
          on: ^acq/
          make: { queue: "global/slow", task: "TASK1" }
        }
      ]
    }
    {
      input_queue: global/slow
      rules: [
        {
          on: ^acq/
          make: { queue: "global/events", task: "TASK2" }
        }
      ]
    }
  ]
}
"""


def test_forwarding_loop_without_a_regex_guard_is_warned(tmp_path):
    path = write(tmp_path, LOOP.replace("TASK1", "${input_task}").replace("TASK2", "acq/again"))
    assert check(path) == (
        0,
        [
            f"warning: {path}:9: watchers[0].rules[0].make.queue: a loop: "
            f"watchers[0].rules[0].make -> global/slow -> watchers[1].rules[0].make -> "
            f"global/events; no step is known to stop an event going round (a step stops it "
            f"when its task has no variables and the next rule's regex does not match it)",
            f"{path}: OK, 1 warning",
        ],
    )


def test_loop_of_fixed_tasks_that_match_again_never_ends(tmp_path):
    path = write(tmp_path, LOOP.replace("TASK1", "acq/1").replace("TASK2", "acq/2"))
    code, lines = check(path)
    assert (code, lines[0].split("global/events; ")[-1]) == (
        0,
        "it never ends: every task on it has no variables and matches the next rule",
    )


def test_loop_guarded_by_a_regex_is_not_warned(tmp_path):
    # The second watcher sends back `done`, which the first watcher's `^acq/` ignores.
    path = write(tmp_path, LOOP.replace("TASK1", "${input_task}").replace("TASK2", "done"))
    assert check(path) == (0, [f"{path}: OK"])


def test_make_into_a_taken_or_failed_queue(tmp_path):
    path = write(
        tmp_path,
        one_watcher("""
            {
              on: x
              make: [
                { queue: "global/events/taken" }
                { queue: "other/taken" }
              ]
            }
        """).replace(
            "  ]\n}", '    { input_queue: "other", taken_queue: "other/taken", rules: [] }\n  ]\n}'
        ),
    )
    assert check(path) == (
        0,
        [
            f"warning: {path}:10: watchers[0].rules[0].make[0].queue: 'global/events/taken' is "
            f"this watcher's own taken queue: events that push there fail",
            f"warning: {path}:11: watchers[0].rules[0].make[1].queue: 'other/taken' is the "
            f"taken queue of watchers[1]: a task there is taken for an event being processed, "
            f"and moved to 'other' when that watcher starts",
            f"{path}: OK, 2 warnings",
        ],
    )


def test_swallowed_bracket_that_still_parses_is_warned_next_to_the_error_it_causes(tmp_path):
    # The `}` after global/events is part of the value; the next line closes the watcher.
    path = write(
        tmp_path,
        """
        {
          redis: { url: "redis://127.0.0.1/" }
          watchers: [
            {
              input_queue: global/events }
            }
          ]
        }
        """,
    )
    assert check(path) == (
        2,
        [
            f"error: {path}:4: watchers[0].rules: required field is missing",
            f"warning: {path}:5: watchers[0].input_queue: unquoted value 'global/events }}' "
            f"runs to the end of the line and keeps the '}}' meant to close the object: quote "
            f"the value or put the }} on the next line",
            f"{path}: 1 error, 1 warning",
        ],
    )


def test_unquoted_values_that_kept_a_comment_or_a_comma_in_a_valid_config(tmp_path):
    path = write(
        tmp_path,
        one_watcher("""
            {
              name: first # acquisitions
              on: ^acq/(?P<p>\\w+)(/\\d{2})?$
              make: {
                queue: todo/${p},
                task: ${p}
              }
            }
        """),
    )
    assert check(path) == (
        0,
        [
            f"warning: {path}:8: watchers[0].rules[0].name: unquoted value 'first # "
            f"acquisitions' runs to the end of the line, so the comment '# acquisitions' is "
            f"part of it: quote the value or put the comment on a line of its own",
            f"warning: {path}:11: watchers[0].rules[0].make.queue: unquoted value 'todo/${{p}},' "
            f"keeps its trailing comma: quote the value or drop the comma",
            f"{path}: OK, 2 warnings",
        ],
    )


def test_hjson_syntax_error_comes_with_a_hint_at_the_swallowed_bracket(tmp_path):
    path = write(
        tmp_path,
        one_watcher("""
            {
              on: ^fwd/{2}
              make: { queue: global/slow }
            }
        """),
    )
    assert check(path) == (
        2,
        [
            f"error: {path}:11: invalid Hjson: found ']' where a key name was expected (check "
            f"your syntax or use quotes if the key name includes {{}}[],: or whitespace)",
            f"hint: {path}:9: unquoted value 'global/slow }}' runs to the end of the line and "
            f"keeps the '}}' meant to close the object: quote the value or put the }} on the "
            f"next line",
            f"{path}: 1 error",
        ],
    )


def test_long_values_and_lines_are_cut_in_errors_and_warnings(tmp_path):
    long = "a" * 2_000_000
    path = write(
        tmp_path,
        one_watcher(f"""
            {{
              name: {long} # the comment
              on: "^x"
              fetch: [ {{ url: "{long}", returns: "r" }} ]
              make: {{ queue: "q" }}
            }}
        """),
    )
    start = "a" * 200 + "…"
    assert check(path) == (
        2,
        [
            f"error: {path}:10: watchers[0].rules[0].fetch[0].url: '{start}' (2,000,000 "
            f"characters) does not start with http:// or https:// (or with ${{env.NAME}}, an "
            f"environment variable holding such a base URL)",
            f"warning: {path}:8: watchers[0].rules[0].name: unquoted value '{start}' "
            f"(2,000,014 characters) runs to the end of the line, so the comment '# the "
            f"comment' is part of it: quote the value or put the comment on a line of its own",
            f"{path}: 1 error, 1 warning",
        ],
    )


def test_a_long_field_name_is_cut_in_its_path(tmp_path):
    key = "k" * 100_000
    path = tmp_path / "conf.json"
    path.write_text(
        '{"redis": {"url": "redis://x/"}, "watchers": [{"input_queue": "in", "rules": [], '
        f'"{key}": 1}}]}}'
    )
    assert check(path) == (
        2,
        [
            f"error: {path}:1: watchers[0].{'k' * 188}… (100,012 characters): unknown field",
            f"{path}: 1 error",
        ],
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("make: " + "[" * 100_000, "nested too deeply: more than 100 levels of objects and arrays"),
        (
            'on: "' + "[" * 100_000 + '"',
            "watchers[0].rules[0].on: invalid regex: classes nested too deeply: " + "[" * 20,
        ),
    ],
)
def test_a_line_of_100000_brackets_is_a_located_error(tmp_path, line, message):
    path = write(tmp_path, one_watcher("{\n  " + line + '\n  make: { queue: "q" }\n}'))
    assert check(path) == (2, [f"error: {path}:8: {message}", f"{path}: 1 error"])


def test_a_hint_on_a_line_of_300000_blanks_is_found_at_once(tmp_path):
    # Blanks inside the value: a backtracking pattern over them would take minutes.
    path = write(tmp_path, "{\n  key: x" + " " * 300_000 + "y }\n]\n")
    code, lines = check(path)
    start = "x" + " " * 199 + "…"
    assert (code, lines[1]) == (
        2,
        f"hint: {path}:2: unquoted value '{start}' (300,004 characters) runs to the end of "
        f"the line and keeps the '}}' meant to close the object: quote the value or put the }} "
        f"on the next line",
    )


# --- Redis Cluster: slots -------------------------------------------------------------

CLUSTER_CONFIG = """
{
  redis: { url: "redis+cluster://127.0.0.1:7000,127.0.0.1:7001" }
  watchers: [
    {
      input_queue: orders/events
      rules: [ { on: "^x", make: { queue: "{orders}/todo" } } ]
    }
    {
      input_queue: "{plant}/events"
      taken_queue: "plant/taken"
      rules: [
        {
          on: ^acq/(?P<p>\\w+)$
          make: [
            { queue: "{plant}/todo", set: "{plant}/seen" }
            { queue: "{plant}/todo2", set: "seen" }
            { queue: "{other}/todo", set: "{other}/seen" }
            { queue: "{${p}}/todo", set: "{${p}}/seen" }
            { queue: "trt/${p}/todo", set: "trt/${p}/seen" }
            { queue: "{other}/later", delay: "5m" }
          ]
        }
      ]
    }
  ]
}
"""


def test_a_cluster_url_has_the_config_checked_per_slot(tmp_path):
    path = write(tmp_path, CLUSTER_CONFIG)
    assert check(path) == (
        2,
        [
            f"error: {path}:5: watchers[0].input_queue: has no hash tag: in a Redis Cluster a "
            f"watcher's own keys (its taken lists, failed queue, heartbeats) must live in its "
            f'input queue\'s slot, which takes a tag; write input_queue: "{{orders}}/events"',
            f"error: {path}:10: watchers[1].taken_queue: 'plant/taken' is in slot 2867, not in "
            f"the input queue's slot 12555: a watcher's own keys must share it; give it the "
            f'input queue\'s tag: write taken_queue: "{{plant}}/taken"',
            f"error: {path}:16: watchers[1].rules[0].make[1].set: set 'seen' (slot 4229) and "
            f"queue '{{plant}}/todo2' (slot 12555) do not share a slot: the dedup test and the "
            f"push are one script, so in a Redis Cluster they must; write set: "
            f'"{{plant}}/seen"',
            f"error: {path}:19: watchers[1].rules[0].make[4].set: set 'trt/${{p}}/seen' (the "
            f"slot of 'trt/${{p}}/seen') and queue 'trt/${{p}}/todo' (the slot of "
            f"'trt/${{p}}/todo') do not share a slot: the dedup test and the push are one "
            f"script, so in a Redis Cluster they must; give both the same hash tag: write "
            f'queue: "{{trt/${{p}}}}/todo" and set: "{{trt/${{p}}}}/seen"',
            f"error: {path}:20: watchers[1].rules[0].make[5].queue: '{{other}}/later' (slot "
            f"11361) is not in the slot of the input queue '{{plant}}/events' (slot 12555): in "
            f"a Redis Cluster a delayed task's queue must share its watcher's slot; give the "
            f'queue the input queue\'s tag: write queue: "{{plant}}/later"',
            f"note: {path}:17: watchers[1].rules[0].make[2].queue: '{{other}}/todo' (slot "
            f"11361) is not in the slot of the input queue '{{plant}}/events' (slot 12555): a "
            f"cross-slot result, committed exactly once through the outbox, in two more round "
            f"trips per batch; to commit it in the event's own step, give the queue and its "
            f'set the input queue\'s tag: write queue: "{{plant}}/todo"',
            f"note: {path}:18: watchers[1].rules[0].make[3].queue: '{{${{p}}}}/todo' (the slot "
            f"of '${{p}}') is not in the slot of the input queue '{{plant}}/events' (slot "
            f"12555): a cross-slot result, committed exactly once through the outbox, in two "
            f"more round trips per batch; to commit it in the event's own step, give the queue "
            f'and its set the input queue\'s tag: write queue: "{{plant}}/todo"',
            f"{path}: 5 errors",
        ],
    )


def test_the_cluster_flag_checks_slots_of_a_config_with_a_server_url(tmp_path):
    path = write(tmp_path, CLUSTER_CONFIG.replace("redis+cluster://127.0.0.1:7000,", "redis://", 1))
    assert check(path) == (0, [f"{path}: OK"])
    code, lines = check(path, "--cluster")
    assert code == 2
    assert lines[-1] == f"{path}: 5 errors"
    assert sum(line.startswith("note: ") for line in lines) == 2


def test_two_tags_on_one_master_are_still_two_slots(tmp_path):
    """Slots, not nodes: {a} and {b} may share a master and still cannot share a
    script; a co-located config has no error and no note."""
    path = write(
        tmp_path,
        """
        {
          redis: { url: "redis+cluster://h:1" }
          watchers: [
            {
              input_queue: "{a}/events"
              rules: [
                { on: "^x", make: [ { queue: "{a}/todo", set: "{a}/seen" } ] }
                { on: "^y", make: { queue: "{b}/todo" } }
              ]
            }
          ]
        }
        """,
    )
    code, lines = check(path)
    assert code == 0
    assert lines[-1] == f"{path}: OK"
    [note] = lines[:-1]
    assert note.startswith(f"note: {path}:8: watchers[0].rules[1].make.queue: '{{b}}/todo'")
    path.write_text(path.read_text().replace('queue: "{b}/todo"', 'queue: "{a}/later"'))
    assert check(path) == (0, [f"{path}: OK"])
