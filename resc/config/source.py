"""Reading a config file: the format by extension, syntax errors with their line, and
the line of every value so that validation errors can point at it.

Positions come from a subclass of hjson's decoder that wraps its object and array
parsers (hjson is pinned in pyproject.toml for that reason).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import hjson
from hjson.decoder import JSONArray, JSONObject, getNext
from hjson.scanner import linecol

from resc.config.text import shown
from resc.core.errors import ConfigError

Loc = tuple[str | int, ...]
FORMATS = (".hjson", ".json")
# Deepest nesting of objects and arrays read. hjson parses by recursion, and a config
# needs a handful of levels; past this, a file is refused at the line where it gets too
# deep, before Python's recursion limit would end the parse with no line at all.
MAX_DEPTH = 100


def dotted(loc: Loc) -> str:
    """A loc as a field path: `watchers[0].rules[1].make.queue`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return shown(out)


class _Node:
    """A parsed object or array, with the start offset of each of its values, and for an
    object the keys written more than once: (key, offset of the first value, offset of
    the repeated one)."""

    __slots__ = ("offsets", "repeated", "value")

    def __init__(
        self,
        value: Any,
        offsets: dict[str | int, int],
        repeated: tuple[tuple[str, int, int], ...] = (),
    ) -> None:
        self.value = value
        self.offsets = offsets
        self.repeated = repeated


class _TooDeep(Exception):
    def __init__(self, offset: int) -> None:
        self.offset = offset


class _LocatingDecoder(hjson.HjsonDecoder):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        depth = 0

        def enter(state: Any) -> None:
            nonlocal depth
            depth += 1
            if depth > MAX_DEPTH:
                raise _TooDeep(state[1])

        def parse_object(
            state: Any,
            encoding: Any,
            strict: Any,
            scan_once: Any,
            object_hook: Any,
            object_pairs_hook: Any,
            memo: Any = None,
            without_braces: bool = False,
        ) -> Any:
            nonlocal depth
            starts: list[int] = []

            def scan_value(s: str, idx: int) -> Any:
                starts.append(idx)
                return scan_once(s, idx)

            def make(pairs: list[tuple[str, Any]]) -> _Node:
                offsets: dict[str | int, int] = {}
                repeated: list[tuple[str, int, int]] = []
                for (key, _), start in zip(pairs, starts, strict=True):
                    if key in offsets:
                        repeated.append((key, offsets[key], start))
                    else:
                        offsets[key] = start
                # The value kept for a repeated key does not matter: the file is refused.
                return _Node(dict(pairs), offsets, tuple(repeated))

            enter(state)
            try:
                return JSONObject(
                    state, encoding, strict, scan_value, None, make, memo, without_braces
                )
            finally:
                depth -= 1

        def parse_array(state: Any, scan_once: Any) -> Any:
            nonlocal depth
            starts: list[int] = []

            def scan_value(s: str, idx: int) -> Any:
                starts.append(idx)
                return scan_once(s, idx)

            enter(state)
            try:
                values, end = JSONArray(state, scan_value)
            finally:
                depth -= 1
            return _Node(values, dict(enumerate(starts))), end

        self.parse_object = parse_object
        self.parse_array = parse_array
        self.scan_once, self.scan_object_once = hjson.decoder.make_scanner(self)


class _Unwrapped:
    """What unwrapping the parsed nodes finds: the line of every value, the unquoted
    strings, and the keys written twice in one object (as located messages)."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.text = text
        self.lines: dict[Loc, int] = {}
        self.quoteless: set[Loc] = set()
        self.repeated: list[tuple[int, str]] = []

    def line(self, offset: int) -> int:
        return int(linecol(self.text, offset)[0])

    def unwrap(self, node: Any, loc: Loc) -> Any:
        if not isinstance(node, _Node):
            return node
        for key, offset in node.offsets.items():
            self.lines[(*loc, key)] = self.line(offset)
            if isinstance(node.value[key], str) and self.text[offset] not in "\"'":
                self.quoteless.add((*loc, key))
        for key, first, again in node.repeated:
            line = self.line(again)
            self.repeated.append(
                (
                    line,
                    f"{self.path}:{line}: {dotted((*loc, key))}: written twice in one object "
                    f"(also on line {self.line(first)}): keep one of them",
                )
            )
        if isinstance(node.value, dict):
            return {k: self.unwrap(v, (*loc, k)) for k, v in node.value.items()}
        return [self.unwrap(v, (*loc, i)) for i, v in enumerate(node.value)]


class SourceFile:
    """A config file's data, with the line on which each value starts.

    `quoteless` holds the locs of the strings written without quotes (Hjson), which run
    to the end of their line."""

    def __init__(
        self,
        path: Path,
        data: Any,
        lines: dict[Loc, int],
        quoteless: frozenset[Loc] = frozenset(),
    ) -> None:
        self.path = path
        self.data = data
        self.quoteless = quoteless
        self._lines = lines

    def line_of(self, loc: Loc) -> int | None:
        """The line of the value at `loc`, or of its nearest enclosing value."""
        while loc not in self._lines:
            if not loc:
                return None
            loc = loc[:-1]
        return self._lines[loc]

    def value_at(self, loc: Loc) -> Any:
        value = self.data
        for key in loc:
            try:
                value = value[key]
            except (KeyError, IndexError, TypeError):
                return None
        return value


def _hjson_problem(exc: hjson.HjsonDecodeError) -> tuple[int, str]:
    """The line and message of an Hjson syntax error. Two of hjson's messages keep an
    unformatted `%r`, and the one for a control character points past it."""
    message, line = exc.msg, exc.lineno
    if message.startswith("Invalid control character"):
        char = exc.doc[exc.pos - 1]
        line = linecol(exc.doc, exc.pos - 1)[0]
        message = f"invalid control character {char!r} in a quoted string"
        if char in "\r\n":
            message = "quoted string not closed on its line"
    elif message.startswith("Invalid \\X escape"):
        message = (
            f"invalid escape \\{exc.doc[exc.pos : exc.pos + 1]} in a quoted string "
            f"(a backslash is written \\\\ there, or leave the string unquoted)"
        )
    message = re.sub(r" (starting )?at$", "", message)
    return line, message[0].lower() + message[1:]


def read_source(path: Path) -> SourceFile:
    """Read and parse a config file; ConfigError for a bad name, I/O or syntax."""
    if path.suffix not in FORMATS:
        raise ConfigError(
            [
                f"{path}: unknown config format {path.suffix or '(no extension)'!r}: "
                f"the file name must end in .hjson or .json"
            ]
        )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    if path.suffix == ".json":
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError([f"{path}:{exc.lineno}: invalid JSON: {exc.msg}"]) from None
        except RecursionError:
            pass  # the parse below says at which line
    try:
        root = _LocatingDecoder().decode(text)
    except hjson.HjsonDecodeError as exc:
        line, message = _hjson_problem(exc)
        raise ConfigError([f"{path}:{line}: invalid Hjson: {message}"]) from None
    except _TooDeep as exc:
        raise ConfigError(
            [
                f"{path}:{linecol(text, exc.offset)[0]}: nested too deeply: more than "
                f"{MAX_DEPTH} levels of objects and arrays"
            ]
        ) from None
    except IndexError:  # how hjson 3.1.0 fails at the end of an unclosed /* or '''
        last_line = text.count("\n") + 1
        raise ConfigError(
            [f"{path}:{last_line}: invalid Hjson: unexpected end of file (unclosed /* or ''')"]
        ) from None
    # The root's own line, for the fields missing from it: where hjson found it, after
    # a BOM, blanks and comments.
    root_start = getNext(text, 1 if text.startswith("\ufeff") else 0)[1]
    found = _Unwrapped(path, text)
    found.lines[()] = found.line(root_start)
    data = found.unwrap(root, ())
    if found.repeated:
        raise ConfigError([message for _, message in sorted(found.repeated)])
    return SourceFile(path, data, found.lines, frozenset(found.quoteless))
