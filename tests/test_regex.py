"""Rule regexes: the original's Unicode-aware syntax, run by RE2 as a search."""

from __future__ import annotations

import pytest

from resc.config.regex import compile_regex
from resc.config.regex_syntax import translate

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
        (r"[\d-]", r"[\p{Nd}\-]"),
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


def test_negated_word_shorthand_inside_a_class_is_rejected() -> None:
    with pytest.raises(ValueError) as info:
        translate(r"[a\W]")

    assert info.value.args == (
        r"\W inside a character class is not supported: write the negated class [^...] "
        r"instead: [a\W]",
    )


def test_negated_space_shorthand_inside_a_class_is_the_complement_of_white_space() -> None:
    regex = compile_regex(r"^[a\S]$")

    assert [regex.search(t.encode()) is not None for t in ("a", "b", " ", "\u3000")] == [
        True,
        True,
        False,
        False,
    ]


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


def matches(pattern: str, text: str) -> bool:
    return compile_regex(pattern).search(text.encode()) is not None


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        # Rust's class set operations, which RE2 would read as literal `&`, `-`, `~`, `[`.
        (r"^c/[a-z&&[^aeiou]]+$", ["c/bcd"], ["c/a]", "c/a", "c/&"]),
        (r"^[a-z--aeiou]+$", ["bcd"], ["a", "-"]),
        (r"^[a-c~~b-d]$", ["a", "d"], ["b", "c", "~"]),
        (r"^[a-z&&b-d&&c]$", ["c"], ["b", "&"]),
        (r"^[a&&b]$", [], ["a", "b", "&"]),
        (r"^[[:alpha:]--[a-z]]+$", ["AB"], ["a", "-"]),
        (r"^[\s&&[^\n]]$", [" ", "\u3000"], ["\n", "s"]),
        (r"^[^a-z&&[^k]]$", ["k", "A"], ["a"]),
        # Nested classes: a union, negated as a whole or in part.
        (r"^[a[bc]]+$", ["abc"], ["[", "]"]),
        (r"^[^a[bc]]$", ["d"], ["a", "b"]),
        (r"^[a[^b-z]]$", ["a", "A"], ["b"]),
        (r"^[\w[-]]+$", ["é-1"], [" "]),
    ],
)
def test_class_operations_and_nested_classes_mean_what_they_mean_in_rust(
    pattern: str, yes: list[str], no: list[str]
) -> None:
    assert [matches(pattern, t) for t in yes + no] == [True] * len(yes) + [False] * len(no)


def test_a_computed_class_is_written_out_as_explicit_ranges() -> None:
    assert translate(r"^c/[a-z&&[^aeiou]]+$") == r"^c/[b-df-hj-np-tv-z]+$"


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        (
            r"^[\w&&[^_]]$",
            r"a class with &&, --, ~~ or a negated nested class can be translated to RE2 only "
            r"when its members are explicit characters, ranges or ASCII classes, not \p{..}, "
            r"\w, \d or \W: [\w&&[^_]]",
        ),
        (
            r"x[\p{Greek}--[\x{3B1}]]",
            r"a class with &&, --, ~~ or a negated nested class can be translated to RE2 only "
            r"when its members are explicit characters, ranges or ASCII classes, not \p{..}, "
            r"\w, \d or \W: [\p{Greek}--[\x{3B1}]]",
        ),
        (
            r"(?i)[a-z&&[^k]]",
            "a class with &&, --, ~~ or a negated nested class cannot be translated to RE2 "
            "under (?i): write it without, or with both cases in explicit ranges: [a-z&&[^k]]",
        ),
        ("[" * 100, "classes nested too deeply: " + "[" * 20),
        (r"[z-a]", "invalid range: its start is after its end: z-a"),
        (r"[a-\d]", r"a range needs a character at each end: a-\d"),
        (r"x[ab", "character class not closed: [ab"),
    ],
)
def test_a_class_that_cannot_be_translated_is_refused_quoting_it(
    pattern: str, message: str
) -> None:
    with pytest.raises(ValueError) as info:
        compile_regex(pattern)

    assert info.value.args == (f"invalid regex: {message}",)


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        ("(?x) ^ a b c $  # a comment\n", ["abc"], ["a b c"]),
        ("(?x)^ a \\  b \\# $", ["a b#"], ["ab#"]),
        ("(?x)^[a b]$", ["a", "b"], [" "]),
        ("(?x)^[a # not a member\n b]$", ["b"], ["n", " "]),
        ("(?x)^a(?-x: b)$", ["a b"], ["ab"]),
        ("(?x:a b)c d$", ["abc d"], ["abcd"]),
        ("(?x)^\\d{2, 3}$", ["12", "123"], ["1"]),
        ("(?x)^(?P<n> a ) $", ["a"], [" a "]),
    ],
)
def test_verbose_mode_ignores_whitespace_and_comments_everywhere_as_in_rust(
    pattern: str, yes: list[str], no: list[str]
) -> None:
    assert [matches(pattern, t) for t in yes + no] == [True] * len(yes) + [False] * len(no)


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        ("(?i)^abc$", ["ABC"], ["abd"]),
        ("(?m)^b$", ["a\nb"], ["ab"]),
        ("(?s)^a.b$", ["a\nb"], ["ab"]),
        ("(?u)^\\w$", ["é"], ["-"]),
        ("(?R)^a.b$", ["a-b"], ["a\rb", "a\nb"]),
        ("(?Rs)^a.b$", ["a\rb"], ["ab"]),
        ("(?R)^a(?-R:.)b$", ["a\rb"], ["a\nb"]),
        ("(?i-s:a.)", ["A-"], ["A\n"]),
    ],
)
def test_rust_flags_apply_in_their_scope(pattern: str, yes: list[str], no: list[str]) -> None:
    assert [matches(pattern, t) for t in yes + no] == [True] * len(yes) + [False] * len(no)


def test_swap_greedy_flag_makes_repetitions_lazy() -> None:
    assert compile_regex("(?U)(?P<a>a+)").search(b"aaa") == {"a": b"a"}
    assert compile_regex("(?U)(?P<a>a+?)").search(b"aaa") == {"a": b"aaa"}


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        (
            "(?-u)\\w",
            "(?-u) is not supported: resc's classes are Unicode-aware, as the original's are "
            "by default; write ASCII classes out, as [0-9] for \\d: (?-u)",
        ),
        (
            "(?mR)^a",
            "^ in multi-line CRLF mode (flags m and R) cannot be run on RE2: (?mR)^",
        ),
        ("(?ii)a", "a flag is given twice: (?ii)"),
        ("(?i-)a", "a flag group needs flags, with at most one - before some: (?i-)"),
        ("(?)a", "a flag group needs flags: (?)"),
        ("\\x4", "invalid escape: \\x4"),
        ("a\\C", "not an escape of the original's syntax: \\C"),
        ("\\Q.\\E", "not an escape of the original's syntax: \\Q"),
        ("\\012", "not an escape of the original's syntax: \\0"),
        ("\\u{110000}", "invalid escape: \\u{110000}"),
    ],
)
def test_flags_and_escapes_that_cannot_be_run_are_refused(pattern: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        compile_regex(pattern)

    assert info.value.args == (f"invalid regex: {message}",)


@pytest.mark.parametrize("pattern", [r"^\u00e9$", r"^\u{e9}$", r"^\U000000E9$", r"^[\u00e9]$"])
def test_unicode_escapes_become_re2_hex_escapes(pattern: str) -> None:
    assert (matches(pattern, "é"), matches(pattern, "e")) == (True, False)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        (r"\w+(", r"missing ): \w+("),
        ("(?x) a b (", "missing ): a b ("),
        (r"x\d\pN)", r"unexpected ): x\d\pN)"),
        (r"[\w]\d{2,1}", r"invalid repetition size: {2,1}"),
    ],
)
def test_re2_errors_quote_the_regex_as_written_not_its_translation(
    pattern: str, message: str
) -> None:
    with pytest.raises(ValueError) as info:
        compile_regex(pattern)

    assert info.value.args == (f"invalid regex: {message}",)


def test_an_error_in_a_long_regex_shows_its_start_and_its_length() -> None:
    with pytest.raises(ValueError) as info:
        compile_regex("a" * 2_000_000 + "(")

    assert info.value.args == (f"invalid regex: missing ): {'a' * 200}… (2,000,001 characters)",)
