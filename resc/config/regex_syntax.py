"""The original's regex syntax (Rust's regex crate) rewritten as RE2 syntax of the same
meaning, or refused where RE2 cannot express it.

What differs, and what is done:
- `\\w`, `\\d`, `\\s` are Unicode-aware in Rust, ASCII in RE2: they become Unicode classes.
- Character classes nest in Rust (`[a[bc]]`) and have set operations: `&&`
  (intersection), `--` (difference), `~~` (symmetric difference). RE2 reads `[` and
  these pairs as literal characters. A class with nesting or an operation is computed
  here over explicit ranges and written out; when it holds a class not written out
  (`\\p{..}`, `\\w`, `\\d`) under an operation or a negated nested class, or when `(?i)`
  is on (Rust folds case before the operation), it is refused.
- Flags: `i`, `m`, `s`, `U` are RE2's too. `x` (verbose: whitespace and `#` comments
  ignored everywhere, classes included, as in Rust) is done here. `R` (CRLF mode) makes
  `.` also exclude `\\r`; its multi-line `^` and `$` are refused. `u` is always on;
  `(?-u)` is refused.
- `\\u{..}`, `\\uHHHH`, `\\UHHHHHHHH` become `\\x{..}`.

A Translation keeps which part of the source each part of the output came from, so
that RE2's errors can quote the regex as the user wrote it.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, replace

from resc.config.text import shown

# Rust's \w is [\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]; RE2 knows no
# \p{Alphabetic}, whose members outside \p{M} are \p{L} and \p{Nl}.
_WORD = r"\p{L}\p{Nl}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}"
# Rust's \s is \p{White_Space}, a fixed list.
_SPACE_RANGES = (
    (0x09, 0x0D),
    (0x20, 0x20),
    (0x85, 0x85),
    (0xA0, 0xA0),
    (0x1680, 0x1680),
    (0x2000, 0x200A),
    (0x2028, 0x2029),
    (0x202F, 0x202F),
    (0x205F, 0x205F),
    (0x3000, 0x3000),
)
_ASCII_CLASSES = {
    "alnum": ((0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)),
    "alpha": ((0x41, 0x5A), (0x61, 0x7A)),
    "ascii": ((0x00, 0x7F),),
    "blank": ((0x09, 0x09), (0x20, 0x20)),
    "cntrl": ((0x00, 0x1F), (0x7F, 0x7F)),
    "digit": ((0x30, 0x39),),
    "graph": ((0x21, 0x7E),),
    "lower": ((0x61, 0x7A),),
    "print": ((0x20, 0x7E),),
    "punct": ((0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)),
    "space": ((0x09, 0x0D), (0x20, 0x20)),
    "upper": ((0x41, 0x5A),),
    "word": ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)),
    "xdigit": ((0x30, 0x39), (0x41, 0x46), (0x61, 0x66)),
}
_SIMPLE_ESCAPES = {"n": 0x0A, "t": 0x09, "r": 0x0D, "f": 0x0C, "v": 0x0B, "a": 0x07}
_HEX_DIGITS = {"x": 2, "u": 4, "U": 8}
_FLAGS = "imsUuxR"
_RE2_FLAGS = "imsU"  # passed on as written; RE2 scopes them as Rust does
_MAX_CLASS_DEPTH = 50
# Runs of text copied as they are (most of a regex), up to the next character that the
# translation looks at.
_PLAIN = re.compile(r"[^\\\[().^$]+")
_VERBOSE_PLAIN = re.compile(r"[^\\\[().^$#\s]+")
_LAST = 0x10FFFF

Ranges = tuple[tuple[int, int], ...]  # sorted, disjoint, not adjacent


def _normal(ranges: list[tuple[int, int]]) -> Ranges:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return tuple(out)


def _complement(ranges: Ranges) -> Ranges:
    out, start = [], 0
    for lo, hi in ranges:
        if lo > start:
            out.append((start, lo - 1))
        start = hi + 1
    if start <= _LAST:
        out.append((start, _LAST))
    # Surrogates are no characters: neither engine can match one.
    return _intersection(tuple(out), ((0, 0xD7FF), (0xE000, _LAST)))


def _intersection(a: Ranges, b: Ranges) -> Ranges:
    # One pass over both sorted lists: a class may hold many thousands of ranges.
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return _normal(out)


def _apply(op: str, a: Ranges, b: Ranges) -> Ranges:
    if op == "&&":
        return _intersection(a, b)
    if op == "--":
        return _intersection(a, _complement(b))
    return _normal([*_intersection(a, _complement(b)), *_intersection(b, _complement(a))])


def _class_char(code: int) -> str:
    """One character as RE2 reads it inside a class, whatever its neighbours."""
    char = chr(code)
    if code < 0x80 and char.isalnum():
        return char
    if 0x20 < code < 0x7F:
        return "\\" + char  # ASCII punctuation: escaped, never an operator or the end
    return f"\\x{{{code:X}}}"


def _render(ranges: Ranges) -> str:
    if not ranges:
        return f"[^\\x00-\\x{{{_LAST:X}}}]"  # the empty class: matches nothing
    parts = [
        _class_char(lo) if lo == hi else f"{_class_char(lo)}-{_class_char(hi)}" for lo, hi in ranges
    ]
    return "[" + "".join(parts) + "]"


@dataclass(frozen=True, slots=True)
class _Item:
    """A member of a class: explicit `ranges` when known, and its text inside an RE2
    class (None when RE2 has none: `\\W`)."""

    text: str | None
    ranges: Ranges | None
    written: str


@dataclass(frozen=True, slots=True)
class _Bracket:
    """A bracketed class: its unions, joined left to right by the operators."""

    negated: bool
    unions: tuple[tuple[_Item | _Bracket, ...], ...]
    operators: tuple[str, ...]
    written: str

    def simple(self) -> bool:
        """No operation, and nested classes (if any) only add members: RE2 can take the
        members of all of them in one class."""
        return not self.operators and all(
            isinstance(m, _Item) or (not m.negated and m.simple()) for m in self.unions[0]
        )

    def members(self) -> list[_Item]:
        out: list[_Item] = []
        for member in self.unions[0]:
            out += [member] if isinstance(member, _Item) else member.members()
        return out

    def ranges(self) -> Ranges | None:
        result: Ranges | None = None
        for i, union in enumerate(self.unions):
            collected: list[tuple[int, int]] = []
            for member in union:
                ranges = member.ranges if isinstance(member, _Item) else member.ranges()
                if ranges is None:
                    return None
                collected += ranges
            value = _normal(collected)
            result = value if result is None else _apply(self.operators[i - 1], result, value)
        assert result is not None
        return _complement(result) if self.negated else result


@dataclass(frozen=True, slots=True)
class _Flags:
    i: bool = False
    m: bool = False
    s: bool = False
    U: bool = False
    x: bool = False
    R: bool = False


class Translation:
    """RE2 text, and for each part of it the span of the source it came from."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._parts: list[str] = []
        self._starts: list[int] = []  # output offset of each part
        self._spans: list[tuple[int, int]] = []  # source span of each part
        self._length = 0

    def emit(self, text: str, start: int, end: int) -> None:
        if text:
            self._parts.append(text)
            self._starts.append(self._length)
            self._spans.append((start, end))
            self._length += len(text)

    def _source_offset(self, part: int, offset: int, at_end: bool) -> int:
        """Where output `offset`, inside `part`, comes from: exactly for a part copied
        as it is, else the start (or end) of what the part came from."""
        start, end = self._spans[part]
        if self._parts[part] == self.source[start:end]:
            return start + offset - self._starts[part]
        return end if at_end else start

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def written(self, start: int, end: int) -> str:
        """The source that the output text [start, end) came from."""
        if not self._parts:
            return self.source
        end = max(end, start + 1)
        first = max(bisect.bisect_right(self._starts, start) - 1, 0)
        last = max(bisect.bisect_left(self._starts, end) - 1, first)
        source_start = self._source_offset(first, start, at_end=False)
        source_end = self._source_offset(last, min(end, self._length), at_end=True)
        return self.source[source_start:source_end]


def _error(message: str, written: str) -> ValueError:
    return ValueError(f"{message}: {shown(written)}")


class _Translator:
    def __init__(self, source: str) -> None:
        self.src = source
        self.i = 0
        self.out = Translation(source)
        self.scopes = [_Flags()]  # the flags of each open group, innermost last

    @property
    def flags(self) -> _Flags:
        return self.scopes[-1]

    def run(self) -> Translation:
        src = self.src
        while self.i < len(src):
            if self.skip_space():
                continue
            start = self.i
            plain = (_VERBOSE_PLAIN if self.flags.x else _PLAIN).match(src, start)
            if plain is not None:
                self.i = plain.end()
                self.out.emit(plain.group(), start, self.i)
                continue
            char = src[self.i]
            if char == "\\":
                self.out.emit(self.escape(), start, self.i)
            elif char == "[":
                self.out.emit(self.bracket_text(), start, self.i)
            elif char == "(":
                self.group()
            else:
                self.i += 1
                if char == ")" and len(self.scopes) > 1:
                    self.scopes.pop()
                elif char == "." and self.flags.R and not self.flags.s:
                    char = "[^\\n\\r]"
                elif char in "^$" and self.flags.R and self.flags.m:
                    raise _error(
                        f"{char} in multi-line CRLF mode (flags m and R) cannot be run on RE2",
                        src[max(start - 20, 0) : start + 1],
                    )
                self.out.emit(char, start, self.i)
        return self.out

    def skip_space(self) -> bool:
        """In verbose mode, step over whitespace and a `#` comment; whether it did."""
        if not self.flags.x or self.i >= len(self.src):
            return False
        char = self.src[self.i]
        if char == "#":
            end = self.src.find("\n", self.i)
            self.i = len(self.src) if end < 0 else end + 1
            return True
        if char.isspace():
            self.i += 1
            return True
        return False

    def skip_spaces(self) -> None:
        while self.skip_space():
            pass

    # --- groups and flags ----------------------------------------------------------

    def group(self) -> None:
        src, start = self.src, self.i
        end = start + 2
        while end < len(src) and src[end] in _FLAGS + "-":
            end += 1
        if src.startswith("(?)", start):
            raise _error("a flag group needs flags", "(?)")
        if (
            not src.startswith("(?", start)
            or end == start + 2
            or end >= len(src)
            or src[end] not in ":)"
        ):
            # A plain or named group, or syntax RE2 judges: (?P<n>, (?:, (?=.
            self.scopes.append(self.flags)
            self.i = start + (2 if src.startswith("(?", start) else 1)
            self.out.emit(src[start : self.i], start, self.i)
            return
        written = src[start : end + 1]
        flags = self.flags_of(src[start + 2 : end], written)
        self.i = end + 1
        shown_flags = "".join(f for f in src[start + 2 : end] if f in _RE2_FLAGS + "-")
        shown_flags = shown_flags.rstrip("-")
        if src[end] == ":":
            self.scopes.append(flags)
            self.out.emit(f"(?{shown_flags}:", start, self.i)
        else:
            self.scopes[-1] = flags
            self.out.emit(f"(?{shown_flags})" if shown_flags else "", start, self.i)

    def flags_of(self, letters: str, written: str) -> _Flags:
        if not letters or letters.endswith("-") or letters.count("-") > 1:
            raise _error("a flag group needs flags, with at most one - before some", written)
        on, _, off = letters.partition("-")
        if len(set(on + off)) < len(on + off):
            raise _error("a flag is given twice", written)
        if "u" in off:
            raise _error(
                "(?-u) is not supported: resc's classes are Unicode-aware, as the original's "
                "are by default; write ASCII classes out, as [0-9] for \\d",
                written,
            )
        changes = {f: True for f in on if f != "u"} | {f: False for f in off}
        return replace(self.flags, **changes)

    # --- escapes -------------------------------------------------------------------

    def escape(self) -> str:
        """The escape at self.i, outside a class, as RE2 text."""
        src, start = self.src, self.i
        if start + 1 >= len(src):
            self.i = len(src)
            return "\\"  # RE2 refuses a trailing backslash
        letter = src[start + 1]
        if letter in "wWdDsS":
            self.i += 2
            return {
                "w": f"[{_WORD}]",
                "W": f"[^{_WORD}]",
                "d": r"\p{Nd}",
                "D": r"\P{Nd}",
                "s": _render(_SPACE_RANGES),
                "S": _render(_complement(_SPACE_RANGES)),
            }[letter]
        if letter in "pP":
            return self.unicode_class()
        if letter in "uU" or letter.isspace():
            # RE2 has no \u, and an escaped space (verbose mode) must stay a space.
            code = self.code_point()
            assert code is not None
            return f"\\x{{{code:X}}}"
        if letter in "CQE" or letter.isdigit():
            # RE2's any byte (\C), quoting (\Q..\E) and octal (\0): errors in the original.
            raise _error("not an escape of the original's syntax", src[start : start + 2])
        if letter == "x":
            self.code_point()  # checked here, where the message quotes the source
        else:
            self.i += 2
        return src[start : self.i]

    def unicode_class(self) -> str:
        src, start = self.src, self.i
        if start + 2 < len(src) and src[start + 2] == "{":
            end = src.find("}", start)
            self.i = len(src) if end < 0 else end + 1
        else:
            self.i = min(start + 3, len(src))
        written = src[start : self.i]
        return "".join(written.split()) if self.flags.x else written

    def code_point(self) -> int | None:
        """The character of a `\\x`, `\\u`, `\\U`, simple or punctuation escape at self.i,
        or None for another escape (self.i unchanged then)."""
        src, start = self.src, self.i
        letter = src[start + 1]
        if letter in _SIMPLE_ESCAPES:
            self.i += 2
            return _SIMPLE_ESCAPES[letter]
        if letter in _HEX_DIGITS:
            if src.startswith("{", start + 2):
                end = src.find("}", start)
                digits = src[start + 3 : end] if end > 0 else ""
                self.i = end + 1 if end > 0 else len(src)
            else:
                digits = src[start + 2 : start + 2 + _HEX_DIGITS[letter]]
                self.i = start + 2 + len(digits)
                if len(digits) < _HEX_DIGITS[letter]:
                    digits = ""
            try:
                code = int(digits, 16)
            except ValueError:
                code = -1
            if not 0 <= code <= _LAST or 0xD800 <= code <= 0xDFFF:
                raise _error("invalid escape", src[start : self.i])
            return code
        if not letter.isalnum():
            self.i += 2
            return ord(letter)  # an escaped punctuation or (verbose mode) space
        return None

    # --- classes -------------------------------------------------------------------

    def bracket_text(self) -> str:
        bracket = self.bracket(0)
        if bracket.simple():
            members = bracket.members()
            for member in members:
                if member.text is None:
                    raise _error(
                        f"{member.written} inside a character class is not supported: "
                        f"write the negated class [^...] instead",
                        bracket.written,
                    )
            body = "".join(m.text or "" for m in members)
            return f"[{'^' if bracket.negated else ''}{body}]"
        if self.flags.i:
            raise _error(
                "a class with &&, --, ~~ or a negated nested class cannot be translated "
                "to RE2 under (?i): write it without, or with both cases in explicit ranges",
                bracket.written,
            )
        ranges = bracket.ranges()
        if ranges is None:
            raise _error(
                "a class with &&, --, ~~ or a negated nested class can be translated to RE2 "
                "only when its members are explicit characters, ranges or ASCII classes, "
                "not \\p{..}, \\w, \\d or \\W",
                bracket.written,
            )
        return _render(ranges)

    def bracket(self, depth: int) -> _Bracket:
        src, start = self.src, self.i
        if depth > _MAX_CLASS_DEPTH:
            raise _error("classes nested too deeply", src[start : start + 20])
        self.i += 1
        self.skip_spaces()
        negated = src.startswith("^", self.i)
        if negated:
            self.i += 1
            self.skip_spaces()
        unions: list[tuple[_Item | _Bracket, ...]] = []
        operators: list[str] = []
        union: list[_Item | _Bracket] = []
        if src.startswith("]", self.i):  # first, `]` is a member
            self.i += 1
            union.append(_Item("\\]", ((0x5D, 0x5D),), "]"))
        while True:
            self.skip_spaces()
            if self.i >= len(src):
                raise _error("character class not closed", src[start:])
            char = src[self.i]
            if char == "]":
                self.i += 1
                break
            if char == "[":
                union.append(self.ascii_class() or self.bracket(depth + 1))
            elif src[self.i : self.i + 2] in ("&&", "--", "~~"):
                operators.append(src[self.i : self.i + 2])
                unions.append(tuple(union))
                union = []
                self.i += 2
            else:
                union.append(self.class_range())
        unions.append(tuple(union))
        return _Bracket(negated, tuple(unions), tuple(operators), src[start : self.i])

    def ascii_class(self) -> _Item | None:
        src, start = self.src, self.i
        if not src.startswith("[:", start):
            return None
        end = src.find(":]", start + 2)
        name = src[start + 2 : end] if end > 0 else ""
        negated = name.startswith("^")
        ranges = _ASCII_CLASSES.get(name.removeprefix("^"))
        if ranges is None:
            return None  # Rust reads it as a nested class then
        self.i = end + 2
        written = src[start : self.i]
        return _Item(written, _complement(ranges) if negated else ranges, written)

    def class_range(self) -> _Item:
        start = self.i
        first = self.class_member()
        self.skip_spaces()
        if not self.src.startswith("-", self.i):
            return first
        after = self.i + 1
        while after < len(self.src) and self.flags.x and self.src[after].isspace():
            after += 1
        if after >= len(self.src) or self.src[after] in "]-":
            return first  # a `-` last, or the start of `--`
        self.i = after
        self.skip_spaces()
        last = self.class_member()
        written = self.src[start : self.i]
        ends = [m.ranges for m in (first, last)]
        if not all(r is not None and len(r) == 1 and r[0][0] == r[0][1] for r in ends):
            raise _error("a range needs a character at each end", written)
        assert first.ranges is not None and last.ranges is not None
        lo, hi = first.ranges[0][0], last.ranges[0][0]
        if lo > hi:
            raise _error("invalid range: its start is after its end", written)
        return _Item(f"{_class_char(lo)}-{_class_char(hi)}", ((lo, hi),), written)

    def class_member(self) -> _Item:
        """A character or an escape inside a class."""
        src, start = self.src, self.i
        if src[start] != "\\":
            self.i += 1
            return _Item(_class_char(ord(src[start])), ((ord(src[start]),) * 2,), src[start])
        if start + 1 >= len(src):
            raise _error("character class not closed", src[start:])
        letter = src[start + 1]
        if letter in "wWdDsS":
            self.i += 2
            written = src[start : self.i]
            if letter == "s":
                return _Item(_render(_SPACE_RANGES)[1:-1], _SPACE_RANGES, written)
            if letter == "S":
                ranges = _complement(_SPACE_RANGES)
                return _Item(_render(ranges)[1:-1], ranges, written)
            text = {"w": _WORD, "d": r"\p{Nd}", "D": r"\P{Nd}", "W": None}[letter]
            return _Item(text, None, written)
        if letter in "pP":
            text = self.unicode_class()
            return _Item(text, None, src[start : self.i])
        code = self.code_point()
        if code is None:
            raise _error("invalid escape in a character class", src[start : start + 2])
        return _Item(_class_char(code), ((code, code),), src[start : self.i])


def translation(source: str) -> Translation:
    """The RE2 text of a regex in the original's syntax; ValueError, quoting the regex as
    written, for what RE2 cannot run with the same meaning."""
    return _Translator(source).run()


def translate(source: str) -> str:
    """The RE2 text of a regex in the original's syntax (see `translation`)."""
    return translation(source).text
