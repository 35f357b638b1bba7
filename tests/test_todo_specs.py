"""The todo queues of a config (resc.config.todo): set_ttl and queue_glob as config
fields, the set of a queue named with variables, and names read back into variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from resc.config.load import load_config
from resc.config.patterns import parse_pattern
from resc.config.todo import glob_of, match_pattern, todo_specs
from resc.core.errors import ConfigError
from tests.conftest import make_config, write_config


def load(tmp_path: Path, makes: list[dict[str, Any]], **watcher: Any):
    rule = {"on": r"^(?P<plant>\w+)/(?P<id>\d+)$", "make": makes}
    conf = make_config("redis://127.0.0.1:1/0", [{"input_queue": "in", "rules": [rule], **watcher}])
    return load_config(write_config(tmp_path, conf))


@pytest.mark.parametrize(
    ("written", "seconds"),
    [(90, 90.0), (0.5, 0.5), ("90s", 90.0), ("30m", 1800.0), ("12h", 43200.0), ("7d", 604800.0),
     ("1.5h", 5400.0), ("45", 45.0)],
)  # fmt: skip
def test_set_ttl_is_seconds_or_a_text_with_a_unit(tmp_path, written, seconds):
    config = load(tmp_path, [{"queue": "q", "set": "s", "set_ttl": written}])
    assert [spec.set_ttl_s for spec in todo_specs(config)] == [seconds]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        ({"queue": "q", "set_ttl": 10}, "set_ttl needs a set"),
        ({"queue": "q", "set": "s", "set_ttl": "ten"}, "'ten' is not a duration"),
        ({"queue": "q", "set": "s", "set_ttl": 0}, "must be more than 0 seconds"),
        ({"queue": "q", "set": "s", "set_ttl": True}, "must be a number of seconds"),
        ({"queue": "q", "set": "s", "set_ttl": "-5m"}, "is not a duration"),
        ({"queue": "q", "queue_glob": ""}, "must not be empty"),
    ],
)
def test_bad_set_ttl_and_queue_glob_are_refused_at_their_line(tmp_path, make, message):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, [make])
    assert len(info.value.problems) == 1
    assert "watchers[0].rules[0].make" in info.value.problems[0]
    assert message in info.value.problems[0]


def test_the_watchers_set_ttl_applies_to_its_makes_with_a_set_and_the_longest_wins(tmp_path):
    config = load(
        tmp_path,
        [
            {"queue": "a", "set": "sa"},
            {"queue": "a", "set": "sa", "set_ttl": "2h"},
            {"queue": "b"},
            {"queue": "trt/${plant}/todo", "set": "trt/${plant}/set", "queue_glob": "trt/*/todo"},
        ],
        set_ttl="1h",
    )
    assert [(s.queue.source, s.set_ttl_s, s.glob) for s in todo_specs(config)] == [
        ("a", 7200.0, None),
        ("b", None, None),
        ("trt/${plant}/todo", 3600.0, "trt/*/todo"),
    ]


def test_the_set_of_a_queue_is_named_from_the_queues_variables(tmp_path):
    config = load(
        tmp_path,
        [
            {"queue": "trt/${plant}/todo", "set": "trt/${plant}/set"},
            {"queue": "by/${plant}", "set": "set/${id}"},
        ],
    )
    first, second = todo_specs(config)
    assert first.set_of("trt/plantA/todo") == "trt/plantA/set"
    assert first.set_of("other/plantA/todo") is None
    assert first.default_glob == "trt/*/todo"
    # The set needs ${id}, which the queue's name does not hold.
    assert second.set_of("by/plantA") is None


def test_names_are_read_back_into_variables():
    pattern = parse_pattern("${a}/x/${b}/${a}")
    assert match_pattern(pattern, "1/x/2/1") == {"a": "1", "b": "2"}
    assert match_pattern(pattern, "1/x/2/3") is None
    assert match_pattern(parse_pattern("a.b[c]"), "a.b[c]") == {}
    assert match_pattern(parse_pattern("a.b[c]"), "aXb[c]") is None
    assert glob_of("q*[${x}]?") == r"q\*\[*\]\?"
