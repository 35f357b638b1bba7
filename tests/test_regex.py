"""Rule regexes: the original's Unicode-aware syntax, run by RE2 as a search."""

from __future__ import annotations

import pytest

from resc.config.regex import compile_regex, translate

EXAMPLE = r"^acq/(?P<process_id>\w+)/(?P<product_id>\w+)$"


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        (r"^\w$", "é", True),
        (r"^\w$", "-", False),
        (r"^\W$", "-", True),
        (r"^\W$", "é", False),
        (r"^\d$", "٣", True),  # ARABIC-INDIC DIGIT THREE
        (r"^\D$", "٣", False),
        (r"^\s$", "\u3000", True),  # IDEOGRAPHIC SPACE
        (r"^\S$", "\u3000", False),
        (r"^[\w]$", "é", True),
        (r"^[\d]$", "٣", True),
        (r"^[\s]$", "\u00a0", True),  # NO-BREAK SPACE
        (r"^[\D]$", "٣", False),
        (r"^[^\w]$", "é", False),
        (r"^[]\w]$", "]", True),  # a `]` first in a class is a literal
    ],
)
def test_perl_classes_are_unicode_aware(pattern: str, text: str, matches: bool) -> None:
    assert (compile_regex(pattern).search(text.encode()) is not None) is matches


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (r"a\d", r"a\p{Nd}"),
        (r"\D", r"\P{Nd}"),
        (r"[\d-]", r"[\p{Nd}-]"),
        (r"\\w", r"\\w"),  # an escaped backslash, then a literal `w`
        (r"[\\w]", r"[\\w]"),
        (r"\p{Greek}\x{41}", r"\p{Greek}\x{41}"),
    ],
)
def test_translate_rewrites_shorthands_and_keeps_escaped_backslashes(
    pattern: str, expected: str
) -> None:
    assert translate(pattern) == expected


def test_escaped_backslash_before_w_matches_a_backslash() -> None:
    regex = compile_regex(r"^\\w$")

    assert (regex.search(b"\\w"), regex.search(b"a")) == ({}, None)


@pytest.mark.parametrize("shorthand", ["W", "S"])
def test_negated_shorthand_inside_a_class_is_rejected(shorthand: str) -> None:
    with pytest.raises(ValueError, match=rf"^\\{shorthand} inside a character class"):
        translate(rf"[a\{shorthand}]")


def test_regex_matches_anywhere_in_the_event() -> None:
    regex = compile_regex(r"(?P<n>\d+)/done")

    assert regex.search(b"trt/plantA/42/done/now") == {"n": b"42"}
    assert regex.search(b"trt/plantA/42") is None


@pytest.mark.parametrize("group", ["(?P<n>b)", "(?<n>b)"])
def test_both_named_group_syntaxes_give_named_groups(group: str) -> None:
    regex = compile_regex(f"a{group}c")

    assert (regex.group_names, regex.search(b"xabcx")) == (("n",), {"n": b"b"})


def test_non_ascii_word_group_is_returned_as_utf8_bytes() -> None:
    regex = compile_regex(EXAMPLE)

    assert regex.group_names == ("process_id", "product_id")
    assert regex.search("acq/Zürich/1".encode()) == {
        "process_id": "Zürich".encode(),
        "product_id": b"1",
    }


def test_groups_that_did_not_take_part_are_absent() -> None:
    regex = compile_regex(r"^(?P<a>x)?(?P<b>y)|(?P<c>z)$")

    assert regex.search(b"y") == {"b": b"y"}
    assert regex.search(b"z") == {"c": b"z"}


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("a(b", "invalid regex: missing ): a(b"),
        ("(?=a)", "invalid regex: invalid perl operator: (?="),  # no lookaround
    ],
)
def test_invalid_regex_raises_value_error_with_text_message(pattern: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        compile_regex(pattern)

    assert info.value.args == (message,)


def test_catastrophic_backtracking_pattern_fails_in_linear_time() -> None:
    assert compile_regex("^(a+)+$").search(b"a" * 100_000 + b"b") is None
