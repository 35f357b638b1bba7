"""Patterns: `${name}` references expanded with bytes variables."""

from __future__ import annotations

import pytest

from resc.config.patterns import parse_pattern, reference_problem
from resc.core.errors import MissingVariable

NAME_RULE = "a name between ${ and } is made of letters, digits, _ and ."


@pytest.mark.parametrize(
    ("source", "literals", "refs"),
    [
        ("trt/${a}/${b}", (b"trt/", b"/", b""), ("a", "b")),
        ("plain/queue", (b"plain/queue",), ()),
        ("${a}-${a}", (b"", b"-", b""), ("a", "a")),
        ("${db.id}", (b"", b""), ("db.id",)),
        ("cost $5 ${a", (b"cost $5 ${a",), ()),  # a lone `$`, an unclosed `${`
        ("${} ${a b} $${a}", (b"${} ${a b} $", b""), ("a",)),
    ],
)
def test_parse_splits_literals_and_references(
    source: str, literals: tuple[bytes, ...], refs: tuple[str, ...]
) -> None:
    pattern = parse_pattern(source)

    assert (pattern.literals, pattern.refs, str(pattern)) == (literals, refs, source)


def test_expand_replaces_each_reference_with_its_bytes() -> None:
    pattern = parse_pattern("trt/${process_id}/${product_id}/${process_id}")
    variables = {"process_id": "Zürich".encode(), "product_id": b"\xff1", "unused": b"x"}

    assert pattern.expand(variables) == "trt/Zürich/".encode() + b"\xff1/" + "Zürich".encode()


def test_expand_without_references_gives_the_literal_text() -> None:
    assert parse_pattern("cost $5 ${a").expand({"a": b"x"}) == b"cost $5 ${a"


def test_expand_dotted_name() -> None:
    assert parse_pattern("q/${db.id}").expand({"db.id": b"634876914"}) == b"q/634876914"


def test_expand_raises_missing_variable_with_its_name() -> None:
    with pytest.raises(MissingVariable) as info:
        parse_pattern("trt/${a}/${b}").expand({"a": b"x"})

    assert info.value.name == "b"
    assert str(info.value) == "variable ${b} has no value for this event"


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("trt/${a}/${b.c} cost $5 $${a}", None),
        ("a/${b", "${ without its } at character 3: '${b'"),
        ("${a} ${", "${ without its } at character 6: '${'"),
        ("${}", "'${}' at character 1 is not a reference: " + NAME_RULE),
        ("x${a-b}", "'${a-b}' at character 2 is not a reference: " + NAME_RULE),
    ],
)
def test_reference_problem_names_the_first_dollar_brace_that_starts_no_reference(
    source: str, problem: str | None
) -> None:
    assert reference_problem(source) == problem
