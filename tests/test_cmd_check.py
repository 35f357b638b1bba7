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
