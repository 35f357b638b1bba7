"""Rule regexes: the original's syntax (Rust's regex crate) on google-re2.

Both engines run in linear time and share most of their syntax. Where they differ in
meaning, the pattern is translated before compiling: RE2's `\\w`, `\\d` and `\\s` are
ASCII-only, the original's are Unicode-aware, so they become Unicode classes here.
`\\b` stays ASCII-only (RE2 cannot express a Unicode word boundary).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import re2

# Rust's \w is [\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]; RE2 knows no
# \p{Alphabetic}, whose members outside \p{M} are \p{L} and \p{Nl}.
_WORD = r"\p{L}\p{Nl}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}"
_DIGIT = r"\p{Nd}"
# Rust's \s is \p{White_Space}.
_SPACE = (
    r"\t\n\x0B\f\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}"
)

_OUTSIDE_CLASS = {
    "w": f"[{_WORD}]",
    "W": f"[^{_WORD}]",
    "d": _DIGIT,
    "D": r"\P{Nd}",
    "s": f"[{_SPACE}]",
    "S": f"[^{_SPACE}]",
}
_INSIDE_CLASS = {"w": _WORD, "d": _DIGIT, "D": r"\P{Nd}", "s": _SPACE}

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # errors are reported through the exception, not stderr


def translate(pattern: str) -> str:
    """Rewrite the original's regex syntax into RE2 syntax with the same meaning."""
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        ch = pattern[i]
        if ch == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            if nxt in "pPx" and i + 2 < n and pattern[i + 2] == "{":
                end = pattern.find("}", i + 2)
                end = n - 1 if end < 0 else end
                out.append(pattern[i : end + 1])
                i = end + 1
                continue
            if in_class and nxt in "WS":
                raise ValueError(
                    f"\\{nxt} inside a character class is not supported: "
                    f"write the negated class [^...] instead"
                )
            table = _INSIDE_CLASS if in_class else _OUTSIDE_CLASS
            out.append(table.get(nxt, pattern[i : i + 2]))
            i += 2
            continue
        if in_class:
            if ch == "[" and pattern.startswith("[:", i):
                end = pattern.find(":]", i + 2)
                if end >= 0:
                    out.append(pattern[i : end + 2])
                    i = end + 2
                    continue
            if ch == "]":
                in_class = False
        elif ch == "[":
            in_class = True
            out.append(ch)
            i += 1
            # A ']' right after '[' or '[^' is a literal, not the end of the class.
            if pattern.startswith("^", i):
                out.append("^")
                i += 1
            if pattern.startswith("]", i):
                out.append("]")
                i += 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)


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
    """Compile a rule's `on` regex; ValueError with RE2's reason when it is invalid."""
    translated = translate(source).encode("utf-8")
    try:
        compiled = re2.compile(translated, _OPTIONS)
    except re2.error as exc:
        raise ValueError(f"invalid regex: {_reason(exc)}") from None
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


def _reason(exc: re2.error) -> str:
    reason = exc.args[0] if exc.args else "invalid regex"
    return reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)


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
