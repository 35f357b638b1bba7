"""Loading config files: defaults, aliases, and located errors (`file:line: path: message`)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from resc.config.load import load_config
from resc.core.errors import ConfigError

# The reference's example, verbatim (README section "Config file").
REFERENCE_EXAMPLE = r"""
{
  redis: { url: "redis://127.0.0.1/" }
  listener_channel: events          # optional in the docs (see flaws)
  watchers: [
    {
      input_queue: global/events
      taken_queue: global/taken     # optional: default is input_queue + "/taken"
      rules: [
        {
          name: compute on acquisition           # optional: "<anonymous rule>"
          on: "^acq/(?P<process_id>\\w+)/(?P<product_id>\\w+)$"
          make: {
            task: "trt/${process_id}/${product_id}"   # optional: "${input_task}"
            queue: "trt/${process_id}/todo-queue"    # required
            set: "trt/${process_id}/todo-set"        # optional: no dedup
          }
        }
      ]
    }
  ]
}
"""
EXAMPLE_REGEX = r"^acq/(?P<process_id>\w+)/(?P<product_id>\w+)$"

# A skeleton around one rule: the rule's `{` is on line 7, its first field on line 8.
RULE_HEAD = """\
{
  redis: { url: "redis://127.0.0.1/" }
  watchers: [
    {
      input_queue: global/events
      rules: [
        {
"""
RULE_TAIL = """\
        }
      ]
    }
  ]
}
"""
BODY = 8  # line of a rule body's first line
RULE = "watchers[0].rules[0]"


def write(tmp_path: Path, text: str, name: str = "conf.hjson") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def write_rule(tmp_path: Path, body: str) -> Path:
    """A config whose only rule has `body` (one field per line) as its fields."""
    body = textwrap.indent(textwrap.dedent(body).strip("\n"), " " * 10) + "\n"
    return write(tmp_path, RULE_HEAD + body + RULE_TAIL)


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert type(info.value) is ConfigError
    return info.value.problems


# --- valid configs -----------------------------------------------------------------


def test_reference_example_loads_verbatim(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, REFERENCE_EXAMPLE))

    assert config.redis.url == "redis://127.0.0.1/"
    (watcher,) = config.watchers
    assert watcher.input_queue == "global/events"
    (rule,) = watcher.rules
    assert rule.on.source == EXAMPLE_REGEX  # `\\w` in a quoted Hjson string is `\w`
    assert rule.on.search(b"acq/plantA/123") == {"process_id": b"plantA", "product_id": b"123"}
    (make,) = rule.make
    assert (str(make.task), str(make.queue), str(make.set)) == (
        "trt/${process_id}/${product_id}",
        "trt/${process_id}/todo-queue",
        "trt/${process_id}/todo-set",
    )
    # Hjson: an unquoted value runs to the end of its line, a `# comment` included.
    assert config.listener_channel == "events          # optional in the docs (see flaws)"
    assert watcher.taken_queue == 'global/taken     # optional: default is input_queue + "/taken"'


def test_optional_fields_take_their_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        r"""
        {
          redis: { url: "redis://127.0.0.1/" }
          watchers: [
            {
              input_queue: global/events
              rules: [ { on: "^acq/", make: { queue: "global/to-propagate" } } ]
            }
          ]
        }
        """,
    )
    config = load_config(path)

    assert config.listener_channel is None
    (watcher,) = config.watchers
    assert watcher.taken_queue == "global/events/taken"
    assert watcher.failed_queue == "global/events/failed"
    assert watcher.batch == 100
    (rule,) = watcher.rules
    assert rule.name == "<anonymous rule>"
    assert rule.fetch == []
    (make,) = rule.make
    assert str(make.task) == "${input_task}"
    assert make.set is None


def test_json_config_loads_like_the_same_hjson_config(tmp_path: Path) -> None:
    data = {
        "redis": {"url": "redis://127.0.0.1/"},
        "listener_channel": "events",
        "watchers": [
            {
                "input_queue": "global/events",
                "rules": [
                    {
                        "name": "compute on acquisition",
                        "on": EXAMPLE_REGEX,
                        "make": {"task": "trt/${product_id}", "queue": "trt/${process_id}/q"},
                    }
                ],
            }
        ],
    }
    from_json = load_config(write(tmp_path, json.dumps(data, indent=2), "conf.json"))
    from_hjson = load_config(write(tmp_path, json.dumps(data, indent=2), "conf.hjson"))

    assert from_json.model_dump() == from_hjson.model_dump()
    assert from_json.model_dump()["watchers"][0]["rules"][0]["on"] == EXAMPLE_REGEX


@pytest.mark.parametrize(
    ("line", "matches"),
    [
        (r"on: ^acq/(?P<process_id>\w+)/(?P<product_id>\w+)$", True),  # as typed
        (r'on: "^acq/(?P<process_id>\\w+)/(?P<product_id>\\w+)$"', True),  # escaped
        (r"on: ^acq/(?P<process_id>\\w+)/(?P<product_id>\\w+)$", False),  # literal `\`
    ],
)
def test_regex_backslashes_are_escaped_only_in_quoted_strings(
    tmp_path: Path, line: str, matches: bool
) -> None:
    config = load_config(write_rule(tmp_path, f'{line}\nmake: {{ queue: "q" }}'))

    rule = config.watchers[0].rules[0]
    assert (rule.on.search(b"acq/plantA/123") is not None) is matches


def test_hjson_with_crlf_line_ends_loads(tmp_path: Path) -> None:
    text = 'redis: { url: "redis://x/" }\nwatchers: [\n  { input_queue: "in", rules: [] }\n]\n'
    path = tmp_path / "conf.hjson"
    path.write_bytes(text.replace("\n", "\r\n").encode())

    assert load_config(path).watchers[0].taken_queue == "in/taken"


@pytest.mark.parametrize("field", ["make", "todo"])
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('{ queue: "a" }', [("a", None)]),
        ('[ { queue: "a" }, { queue: "b", set: "s" } ]', [("a", None), ("b", "s")]),
    ],
)
def test_make_is_one_object_or_a_list_and_todo_is_its_alias(
    tmp_path: Path, field: str, value: str, expected: list[tuple[str, str | None]]
) -> None:
    config = load_config(write_rule(tmp_path, f'on: "x"\n{field}: {value}'))

    makes = config.watchers[0].rules[0].make
    assert [(str(m.queue), m.set and str(m.set)) for m in makes] == expected


def test_fetched_fields_are_variables_of_the_rule_that_fetches_them(tmp_path: Path) -> None:
    path = write_rule(
        tmp_path,
        r"""
        on: "^job/(?P<id>\\d+)$"
        fetch: [ { url: "http://db/jobs/${id}", returns: "db" } ]
        make: { task: "${db.name}/${db.owner.id}", queue: "q/${id}" }
        """,
    )
    rule = load_config(path).watchers[0].rules[0]

    assert [(str(f.url), f.returns) for f in rule.fetch] == [("http://db/jobs/${id}", "db")]
    assert rule.make[0].task.names == {"db.name", "db.owner.id"}


# --- located errors ----------------------------------------------------------------


def test_error_line_reads_file_line_path_message(tmp_path: Path) -> None:
    path = write_rule(tmp_path, 'on: "x"\ncolour: red\nmake: { queue: "q" }')

    assert problems_of(path) == [f"{path}:{BODY + 1}: {RULE}.colour: unknown field"]


def test_unknown_field_in_json_is_reported_at_its_line(tmp_path: Path) -> None:
    text = '{\n "redis": {"url": "redis://x/"},\n "watchers": [\n  {"input_queue": "a",\n'
    text += '   "rulez": []}\n ]\n}\n'
    path = write(tmp_path, text, "conf.json")

    assert problems_of(path) == [
        f"{path}:4: watchers[0].rules: required field is missing",
        f"{path}:5: watchers[0].rulez: unknown field",
    ]


def test_missing_queue_is_reported_at_the_line_of_its_make(tmp_path: Path) -> None:
    path = write_rule(tmp_path, 'on: "x"\nmake: {\n  task: "t"\n}')

    assert problems_of(path) == [f"{path}:{BODY + 1}: {RULE}.make.queue: required field is missing"]


def test_missing_on_is_reported_at_the_line_of_its_rule(tmp_path: Path) -> None:
    path = write_rule(tmp_path, 'name: r\nmake: { queue: "q" }')

    assert problems_of(path) == [f"{path}:{BODY - 1}: {RULE}.on: required field is missing"]


def test_missing_redis_is_reported_at_the_line_of_the_root(tmp_path: Path) -> None:
    path = write(tmp_path, '# no redis\n\n{\n  watchers: [ { input_queue: "in", rules: [] } ]\n}\n')

    assert problems_of(path) == [
        f"{path}:3: redis: required field is missing (or set RESC_REDIS_URL)"
    ]


def test_wrong_type_names_the_json_type(tmp_path: Path) -> None:
    path = write_rule(
        tmp_path, 'on: "x"\nmake: [\n  { queue: "q" }\n  {\n    queue: "q2"\n    set: 3\n  }\n]'
    )

    assert problems_of(path) == [
        f"{path}:{BODY + 5}: {RULE}.make[1].set: must be a string, not a number"
    ]


def test_invalid_regex_names_on_and_its_line(tmp_path: Path) -> None:
    path = write_rule(tmp_path, 'name: r\non: "a(b"\nmake: { queue: "q" }')

    assert problems_of(path) == [f"{path}:{BODY + 1}: {RULE}.on: invalid regex: missing ): a(b"]


def test_redis_url_must_have_a_redis_scheme(tmp_path: Path) -> None:
    path = write(tmp_path, '{\n  redis: {\n    url: "http://127.0.0.1/"\n  }\n  watchers: []\n}\n')

    assert problems_of(path) == [
        f"{path}:3: redis.url: must start with redis://, rediss://, unix://, redis+sentinel://, "
        "rediss+sentinel://, redis+cluster:// or rediss+cluster://",
        f"{path}:5: watchers: List should have at least 1 item after validation, not 0",
    ]


def test_unknown_variable_is_reported_with_the_known_ones(tmp_path: Path) -> None:
    path = write_rule(
        tmp_path,
        r"""
        on: "^acq/(?P<process_id>\\w+)/(?P<product_id>\\w+)$"
        make: {
          queue: "trt/${plant}"
        }
        """,
    )

    assert problems_of(path) == [
        f"{path}:{BODY + 2}: {RULE}.make.queue: ${{plant}} is not a variable of this rule; "
        "it has: input_task, process_id, product_id"
    ]


@pytest.mark.parametrize(
    ("make", "where"),
    [
        ('{ queue: "${x}" }', "todo.queue"),
        ('[ { queue: "a" }, { queue: "${x}" } ]', "todo[1].queue"),
    ],
)
def test_error_inside_todo_is_reported_under_todo(tmp_path: Path, make: str, where: str) -> None:
    path = write_rule(tmp_path, f'on: "x"\ntodo: {make}')

    assert problems_of(path) == [
        f"{path}:{BODY + 1}: {RULE}.{where}: ${{x}} is not a variable of this rule; "
        "it has: input_task"
    ]


def test_fetched_namespace_is_unknown_to_other_rules(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        r"""
        {
          redis: { url: "redis://x/" }
          watchers: [
            {
              input_queue: in
              rules: [
                {
                  on: "(?P<id>\\d+)"
                  fetch: [ { url: "http://db/${id}", returns: "db" } ]
                  make: { queue: "${db.q}" }
                }
                { on: "(?P<id>\\d+)", make: { queue: "${db.q}" } }
              ]
            }
          ]
        }
        """,
    )

    assert problems_of(path) == [
        f"{path}:12: watchers[0].rules[1].make.queue: ${{db.q}} is not a variable of this rule; "
        "it has: input_task, id"
    ]


def test_fetch_url_cannot_use_fetched_fields(tmp_path: Path) -> None:
    path = write_rule(
        tmp_path,
        """
        on: "x"
        fetch: [
          { url: "http://db/${db.id}", returns: "db" }
        ]
        make: { queue: "q" }
        """,
    )

    assert problems_of(path) == [
        f"{path}:{BODY + 2}: {RULE}.fetch[0].url: ${{db.id}} is not a variable of this rule; "
        "it has: input_task, env.NAME"
    ]


def test_make_cannot_use_fields_of_one_of_several_fetches(tmp_path: Path) -> None:
    path = write_rule(
        tmp_path,
        """
        on: "x"
        fetch: [
          { url: "http://a/", returns: "a" }
          { url: "http://b/", returns: "b" }
        ]
        make: { queue: "q/${a.id}" }
        """,
    )

    assert problems_of(path) == [
        f"{path}:{BODY + 5}: {RULE}.make.queue: uses fields of fetch a, but with several fetches "
        "every make runs once per object of each fetch, so these fields would have no value "
        "for the others"
    ]


def test_watchers_cannot_share_queues(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        {
          redis: { url: "redis://x/" }
          watchers: [
            { input_queue: "a", rules: [] }
            { input_queue: "a", taken_queue: "t", failed_queue: "f", rules: [] }
            {
              input_queue: c
              taken_queue: a
              rules: []
            }
          ]
        }
        """,
    )
    reason = "each watcher needs its own input, taken and failed queues"

    assert problems_of(path) == [
        f"{path}:5: watchers[1].input_queue: 'a' is already watchers[0].input_queue: {reason}",
        f"{path}:8: watchers[2].taken_queue: 'a' is already watchers[0].input_queue: {reason}",
    ]


# --- unusable files ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["conf.yaml", "conf"])
def test_unknown_file_extension_is_rejected(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, "{}", name)
    suffix = repr(path.suffix or "(no extension)")

    assert problems_of(path) == [
        f"{path}: unknown config format {suffix}: the file name must end in .hjson or .json"
    ]


def test_hjson_syntax_error_gives_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, '{\n  redis: { url: "redis://x/" }\n  listener_channel: "events\n}\n')

    assert problems_of(path) == [f"{path}:3: invalid Hjson: quoted string not closed on its line"]


def test_single_backslash_in_a_quoted_hjson_string_is_a_syntax_error(tmp_path: Path) -> None:
    path = write_rule(tmp_path, 'on: "^acq/(?P<p>\\w+)$"\nmake: { queue: "q" }')

    assert problems_of(path) == [
        f"{path}:{BODY}: invalid Hjson: invalid escape \\w in a quoted string "
        "(a backslash is written \\\\ there, or leave the string unquoted)"
    ]


def test_json_syntax_error_gives_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, '{\n  "redis": {"url": "redis://x/"},\n  "watchers": [],\n}\n', "c.json")

    assert problems_of(path) == [
        f"{path}:4: invalid JSON: Expecting property name enclosed in double quotes"
    ]


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        (
            "deep.json",
            "[" * 100_000,
            ":1: nested too deeply: more than 100 levels of objects and arrays",
        ),
        (
            "deep.hjson",
            "[" * 100_000,
            ":1: nested too deeply: more than 100 levels of objects and arrays",
        ),
        (
            "deep2.json",
            '{\n  "redis": {},\n  "watchers": ' + "[" * 100_000,
            ":3: nested too deeply: more than 100 levels of objects and arrays",
        ),
        (
            "deep2.hjson",
            "{\n  redis: {}\n  watchers: " + "[" * 100_000,
            ":3: nested too deeply: more than 100 levels of objects and arrays",
        ),
        (
            "comment.hjson",
            "{\n  /* never closed",
            ":2: invalid Hjson: unexpected end of file (unclosed /* or ''')",
        ),
        ("array.json", "[]", ": the config must be an object"),
        ("latin1.json", b'{"a": "\xe9"}', ": not UTF-8 text (invalid continuation byte at byte 7)"),
    ],
)
def test_unusable_file_raises_only_config_error(
    tmp_path: Path, name: str, content: str | bytes, problem: str
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)

    assert problems_of(path) == [f"{path}{problem}"]


def test_missing_file_raises_config_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.hjson"

    assert problems_of(path) == [f"{path}: cannot read: No such file or directory"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://host:port/0", "the port must be a number from 0 to 65535"),
        ("redis://host:6379/x", "the database must be a number: redis://host:6379/0"),
        ("unix:///tmp/r.sock?db=two", "the database must be a number: redis://host:6379/0"),
    ],
)
def test_unusable_redis_url_is_a_config_error(tmp_path: Path, url: str, message: str) -> None:
    path = tmp_path / "conf.json"
    path.write_text(
        json.dumps(
            {
                "redis": {"url": url},
                "watchers": [{"input_queue": "in", "rules": []}],
            }
        )
    )
    assert problems_of(path) == [f"{path}:1: redis.url: {message}"]


def test_a_group_named_input_task_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "conf.json"
    rule = {"on": "^(?P<input_task>.*)$", "make": {"queue": "q"}}
    path.write_text(
        json.dumps(
            {"redis": {"url": "redis://h/"}, "watchers": [{"input_queue": "in", "rules": [rule]}]}
        )
    )
    assert problems_of(path) == [
        f"{path}:1: watchers[0].rules[0].on: a group may not be named input_task: "
        f"that variable is the whole event"
    ]


def test_a_make_may_have_a_name(tmp_path: Path) -> None:
    path = write_rule(
        tmp_path, 'on: "x"\nmake: [\n  { name: "to archive", queue: "a" }\n  { queue: "b" }\n]'
    )

    (rule,) = load_config(path).watchers[0].rules
    assert [make.name for make in rule.make] == ["to archive", None]


def test_a_make_name_must_be_a_string(tmp_path: Path) -> None:
    path = write_rule(tmp_path, 'on: "x"\nmake: {\n  name: 3\n  queue: "q"\n}')

    assert problems_of(path) == [
        f"{path}:{BODY + 2}: {RULE}.make.name: Input should be a valid string"
    ]


# --- the original's spellings of a rule's fields -----------------------------------


def test_rule_fields_load_under_the_originals_field_names(tmp_path: Path) -> None:
    path = write_rule(
        tmp_path,
        r"""
        on_regex: "^job/(?P<id>\\d+)$"
        fetchers: [ { url: "http://db/jobs/${id}", returns: "db" } ]
        makers: [ { task: "${db.name}", queue: "q/${id}" } ]
        """,
    )
    rule = load_config(path).watchers[0].rules[0]

    assert rule.on.search(b"job/7") == {"id": b"7"}
    assert [(str(f.url), f.returns) for f in rule.fetch] == [("http://db/jobs/${id}", "db")]
    assert [(str(m.task), str(m.queue)) for m in rule.make] == [("${db.name}", "q/${id}")]


def test_errors_are_located_under_the_spelling_the_file_uses(tmp_path: Path) -> None:
    path = write_rule(
        tmp_path,
        """
        on_regex: "a(b"
        fetchers: [ { url: "http://a/", returns: "a", retries: -1 } ]
        makers: { queue: "${x}" }
        """,
    )

    assert problems_of(path) == [
        f"{path}:{BODY}: {RULE}.on_regex: invalid regex: missing ): a(b",
        f"{path}:{BODY + 1}: {RULE}.fetchers[0].retries: "
        "Input should be greater than or equal to 0",
    ]
    path = write_rule(tmp_path, 'on_regex: "x"\nmakers: { queue: "${x}" }')
    assert problems_of(path) == [
        f"{path}:{BODY + 1}: {RULE}.makers.queue: ${{x}} is not a variable of this rule; "
        "it has: input_task"
    ]


@pytest.mark.parametrize(
    ("body", "field", "other"),
    [
        ('on: "x"\non_regex: "y"\nmake: { queue: "q" }', "on_regex", "on"),
        ('on_regex: "x"\non: "y"\nmake: { queue: "q" }', "on", "on_regex"),
        ('fetch: []\nfetchers: []\non: "x"\nmake: { queue: "q" }', "fetchers", "fetch"),
        ('make: { queue: "a" }\nmakers: { queue: "b" }\non: "x"', "makers", "make"),
        ('makers: { queue: "a" }\ntodo: { queue: "b" }\non: "x"', "todo", "makers"),
    ],
)
def test_two_spellings_of_one_field_in_a_rule_are_refused(
    tmp_path: Path, body: str, field: str, other: str
) -> None:
    path = write_rule(tmp_path, body)

    assert problems_of(path) == [
        f"{path}:{BODY + 1}: {RULE}.{field}: the same field as {other} (line {BODY}), "
        "spelled differently: write only one of them"
    ]


# --- keys written twice ------------------------------------------------------------


def test_a_key_written_twice_in_an_hjson_object_names_both_lines(tmp_path: Path) -> None:
    path = write_rule(
        tmp_path,
        """
        on: "x"
        make: { queue: "first" }
        name: r
        make: { queue: "second" }
        """,
    )

    assert problems_of(path) == [
        f"{path}:{BODY + 3}: {RULE}.make: written twice in one object (also on line "
        f"{BODY + 1}): keep one of them"
    ]


def test_keys_written_twice_in_json_are_all_reported_in_line_order(tmp_path: Path) -> None:
    text = (
        '{\n "redis": {"url": "redis://x/"},\n "watchers": [\n'
        '  {"input_queue": "a",\n   "rules": [],\n   "input_queue": "b",\n   "batch": 1,\n'
        '   "batch": 2,\n   "batch": 3}\n ],\n "redis": {}\n}\n'
    )
    path = write(tmp_path, text, "conf.json")
    twice = "written twice in one object"

    assert problems_of(path) == [
        f"{path}:6: watchers[0].input_queue: {twice} (also on line 4): keep one of them",
        f"{path}:8: watchers[0].batch: {twice} (also on line 7): keep one of them",
        f"{path}:9: watchers[0].batch: {twice} (also on line 7): keep one of them",
        f"{path}:11: redis: {twice} (also on line 2): keep one of them",
    ]


# --- strict types ------------------------------------------------------------------

STRICT = """
{
  redis: { url: "redis://x/" }
  grace_period: GRACE
  watchers: [
    {
      input_queue: in
      batch: BATCH
      rules: [
        {
          on: x
          fetch: [ { url: "http://a/", returns: "a", retries: RETRIES } ]
          make: { queue: "q" }
        }
      ]
    }
  ]
}
"""


@pytest.mark.parametrize(
    ("field", "value", "line", "path", "message"),
    [
        ("BATCH", "true", 7, "watchers[0].batch", "must be a whole number, not a boolean"),
        ("BATCH", '"10"', 7, "watchers[0].batch", "must be a whole number, not a string"),
        ("BATCH", "10.5", 7, "watchers[0].batch", "must be a whole number, not 10.5"),
        ("GRACE", "true", 3, "grace_period", "must be a number, not a boolean"),
        ("GRACE", '"10"', 3, "grace_period", "must be a number, not a string"),
        (
            "RETRIES",
            '"3"',
            11,
            "watchers[0].rules[0].fetch[0].retries",
            "must be a whole number, not a string",
        ),
    ],
)
def test_numbers_are_not_converted_from_booleans_or_strings(
    tmp_path: Path, field: str, value: str, line: int, path: str, message: str
) -> None:
    text = STRICT.replace(field, value)
    for name, default in (("GRACE", "5"), ("BATCH", "10"), ("RETRIES", "3")):
        text = text.replace(name, default)
    conf = write(tmp_path, text)

    assert problems_of(conf) == [f"{conf}:{line}: {path}: {message}"]


def test_a_whole_number_fills_a_field_of_seconds(tmp_path: Path) -> None:
    text = STRICT.replace("GRACE", "5").replace("BATCH", "10").replace("RETRIES", "0")
    config = load_config(write(tmp_path, text.replace('returns: "a"', 'returns: "a", timeout: 2')))

    (fetch,) = config.watchers[0].rules[0].fetch
    assert (config.grace_period, config.watchers[0].batch, fetch.retries, fetch.timeout) == (
        5.0,
        10,
        0,
        2.0,
    )
    assert type(config.grace_period) is float


# --- what can never work -----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("/ok?id=${p}", "'/ok?id=${p}'"),
        ("ftp://x/${p}", "'ftp://x/${p}'"),
        ("${p}/x", "'${p}/x'"),  # an event value is percent-encoded: never a scheme
        ("db:80/${p}", "'db:80/${p}'"),
    ],
)
def test_fetch_url_without_an_http_scheme_is_refused(tmp_path: Path, url: str, shown: str) -> None:
    path = write_rule(
        tmp_path,
        f'on: "(?P<p>x)"\nfetch: [\n  {{ url: "{url}", returns: "a" }}\n]\nmake: {{ queue: "q" }}',
    )

    assert problems_of(path) == [
        f"{path}:{BODY + 2}: {RULE}.fetch[0].url: {shown} does not start with http:// or "
        "https:// (or with ${env.NAME}, an environment variable holding such a base URL)"
    ]


@pytest.mark.parametrize("url", ["HTTPS://db/${p}", "http://db/", "${env.BASE}/items/${p}"])
def test_fetch_url_with_an_http_scheme_or_an_environment_base_loads(
    tmp_path: Path, url: str
) -> None:
    path = write_rule(
        tmp_path,
        f'on: "(?P<p>x)"\nfetch: [ {{ url: "{url}", returns: "a" }} ]\nmake: {{ queue: "q" }}',
    )

    assert str(load_config(path).watchers[0].rules[0].fetch[0].url) == url


@pytest.mark.parametrize("field", ["queue", "task", "set"])
def test_an_empty_queue_task_or_set_is_refused(tmp_path: Path, field: str) -> None:
    make = {"queue": '"q"', field: '""'}
    path = write_rule(
        tmp_path,
        'on: "x"\nmake: {\n' + "\n".join(f"  {k}: {v}" for k, v in make.items()) + "\n}",
    )
    line = BODY + 2 + list(make).index(field)

    assert problems_of(path) == [f"{path}:{line}: {RULE}.make.{field}: must not be empty"]


@pytest.mark.parametrize("field", ["taken_queue", "failed_queue"])
def test_an_empty_taken_or_failed_queue_is_refused(tmp_path: Path, field: str) -> None:
    path = write(
        tmp_path,
        f'redis: {{ url: "redis://x/" }}\nwatchers: [\n  {{\n    input_queue: in\n'
        f'    {field}: ""\n    rules: []\n  }}\n]\n',
    )

    assert problems_of(path) == [f"{path}:5: watchers[0].{field}: must not be empty"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("queue", "q/${p", "${ without its } at character 3: '${p'"),
        ("set", "s/${p}/${", "${ without its } at character 8: '${'"),
        ("task", "t/${p", "${ without its } at character 3: '${p'"),
        (
            "task",
            "t/${ p }",
            "'${ p }' at character 3 is not a reference: a name between ${ and } is made of "
            "letters, digits, _ and .",
        ),
        (
            "queue",
            "q/${" + "x" * 50,
            "${ without its } at character 3: '${" + "x" * 28 + "…'",
        ),
    ],
)
def test_a_dollar_brace_that_starts_no_reference_is_refused_in_a_make(
    tmp_path: Path, field: str, value: str, message: str
) -> None:
    make = {"queue": '"q"', field: f'"{value}"'}
    path = write_rule(
        tmp_path,
        'on: "(?P<p>x)"\nmake: {\n' + "\n".join(f"  {k}: {v}" for k, v in make.items()) + "\n}",
    )
    line = BODY + 2 + list(make).index(field)

    assert problems_of(path) == [f"{path}:{line}: {RULE}.make.{field}: {message}"]


def test_a_dollar_brace_without_its_brace_is_refused_in_a_fetch(tmp_path: Path) -> None:
    path = write_rule(
        tmp_path,
        """
        on: "(?P<p>x)"
        fetch: [
          {
            url: "http://a/${p"
            returns: "a"
            method: "POST"
            headers: { X-Id: "${p" }
            body: '''{"id": "${p"}'''
          }
        ]
        make: { queue: "q" }
        """,
    )
    at = f"{RULE}.fetch[0]"

    assert problems_of(path) == [
        f"{path}:{BODY + 3}: {at}.url: ${{ without its }} at character 10: '${{p'",
        f"{path}:{BODY + 6}: {at}.headers.X-Id: ${{ without its }} at character 1: '${{p'",
        f"{path}:{BODY + 7}: {at}.body: '${{p\"}}' at character 9 is not a reference: a name "
        "between ${ and } is made of letters, digits, _ and .",
    ]
