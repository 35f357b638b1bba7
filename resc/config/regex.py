"""Rule regexes: the original's syntax (Rust's regex crate) on google-re2.

Both engines run in linear time and share most of their syntax; resc.config.regex_syntax
rewrites what differs in meaning (Unicode-aware `\\w`, `\\d`, `\\s`, nested classes
and their set operations, verbose mode...) before compiling. `\\b` stays ASCII-only (RE2
cannot express a Unicode word boundary).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import re2

from resc.config.regex_syntax import Translation, translation
from resc.config.text import shown

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # errors are reported through the exception, not stderr


# google-re2's Python wrapper builds a generator and a match object for every search,
# which costs three times the search itself. Rules call the compiled RE2 object's Match
# directly: it returns the (start, end) byte spans of the match and of every group,
# (-1, -1) for a group that took no part (or for everything, when nothing matched).
_UNANCHORED = re2._Anchor.UNANCHORED


@dataclass(frozen=True, eq=False, slots=True)
class Regex:
    """A compiled `on` regex. Searches UTF-8 bytes; groups come back as bytes."""

    source: str
    translated: bytes  # what RE2 compiled
    compiled: re2._Regexp
    group_names: tuple[str, ...]  # names of the named groups, in order
    _named: tuple[tuple[int, str], ...]  # (group index, name)
    _match: Callable[[Any, bytes, int, int], list[tuple[int, int]]]

    def search(self, event: bytes) -> dict[str, bytes] | None:
        """Variables of the first match anywhere in `event`, or None when it does not match.

        Holds every named group that took part in the match.
        """
        spans = self._match(_UNANCHORED, event, 0, len(event))
        if spans[0][0] < 0:
            return None
        found: dict[str, bytes] = {}
        for index, name in self._named:
            start, end = spans[index]
            if start >= 0:
                found[name] = event[start:end]
        return found


def compile_regex(source: str) -> Regex:
    """Compile a rule's `on` regex; ValueError with the reason when it is invalid, quoting
    the regex as written (never its translation)."""
    try:
        rewritten = translation(source)
    except ValueError as exc:
        raise ValueError(f"invalid regex: {exc}") from None
    translated = rewritten.text.encode("utf-8")
    try:
        compiled = re2.compile(translated, _OPTIONS)
    except re2.error as exc:
        raise ValueError(f"invalid regex: {_reason(exc, rewritten)}") from None
    named = tuple(
        sorted((index, name.decode("utf-8")) for name, index in compiled.groupindex.items())
    )
    return Regex(
        source,
        translated,
        compiled,
        tuple(name for _, name in named),
        named,
        compiled._regexp.Match,
    )


def _reason(exc: re2.error, rewritten: Translation) -> str:
    """RE2's reason, `what: part of the pattern`, with that part as the user wrote it."""
    reason = exc.args[0] if exc.args else "invalid regex"
    text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
    what, sep, part = text.partition(": ")
    at = rewritten.text.find(part) if sep else -1
    if at < 0 or not part:
        return f"{what}: {shown(rewritten.source)}"
    return f"{what}: {shown(rewritten.written(at, at + len(part)))}"


class RegexSet:
    """Which of many regexes match an event, in one pass of RE2 over it."""

    def __init__(self, regexes: Sequence[Regex]) -> None:
        regex_set = re2.Set.SearchSet(_OPTIONS)
        for regex in regexes:
            regex_set.Add(regex.translated)
        regex_set.Compile()
        self._match: Callable[[bytes], list[int]] = regex_set._set.Match

    def matching(self, event: bytes) -> list[int]:
        """Indexes of the regexes that match `event` somewhere, in increasing order."""
        found = self._match(event)
        found.sort()
        return found
