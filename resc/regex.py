"""Rule regexes: the original's syntax (Rust's regex crate) on google-re2.

Both engines run in linear time and share most of their syntax. Where they differ in
meaning, the pattern is translated before compiling: RE2's `\\w`, `\\d` and `\\s` are
ASCII-only, the original's are Unicode-aware, so they become Unicode classes here.
`\\b` stays ASCII-only (RE2 cannot express a Unicode word boundary).
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True, eq=False, slots=True)
class Regex:
    """A compiled `on` regex. Searches UTF-8 bytes; groups come back as bytes."""

    source: str
    compiled: re2._Regexp
    group_names: tuple[str, ...]  # names of the named groups, in order
    _named: tuple[tuple[int, str], ...]  # (group index, name)

    def search(self, event: bytes) -> dict[str, bytes] | None:
        """Variables of the first match anywhere in `event`, or None when it does not match.

        Holds every named group that took part in the match.
        """
        m = self.compiled.search(event)
        if m is None:
            return None
        found: dict[str, bytes] = {}
        for index, name in self._named:
            value = m.group(index)
            if value is not None:
                found[name] = value
        return found


def compile_regex(source: str) -> Regex:
    """Compile a rule's `on` regex; ValueError with RE2's reason when it is invalid."""
    translated = translate(source)
    try:
        compiled = re2.compile(translated.encode("utf-8"), _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid regex"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(f"invalid regex: {reason}") from None
    named = tuple(
        sorted((index, name.decode("utf-8")) for name, index in compiled.groupindex.items())
    )
    return Regex(source, compiled, tuple(name for _, name in named), named)
