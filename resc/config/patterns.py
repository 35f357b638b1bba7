"""Patterns: strings with `${name}` references, expanded with an event's variables.

Names are made of word characters and dots (`process_id`, `input_task`, `db.id`).
A lone `$` is literal text. The original also kept a `${` that starts no reference (no
`}`, or no name before it) as text; the config refuses it (`reference_problem`), since it
is a typo far more often than a wanted `${`. Variables are bytes, so events and tasks
never pass through a decode/encode round trip.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from resc.core.errors import MissingVariable

_REFERENCE = re.compile(r"\$\{([\w.]+)\}")
_OPENING = re.compile(r"\$\{")
# How much of the text after a bad `${` a message shows.
_SHOWN_AFTER = 30


def reference_problem(source: str) -> str | None:
    """What is wrong with the first `${` of `source` that starts no `${name}`, or None."""
    for opening in _OPENING.finditer(source):
        at = opening.start()
        if _REFERENCE.match(source, at):
            continue
        close = source.find("}", at)
        if close < 0:
            shown = source[at : at + _SHOWN_AFTER] + (
                "…" if len(source) > at + _SHOWN_AFTER else ""
            )
            return f"${{ without its }} at character {at + 1}: {shown!r}"
        written = source[at : close + 1]
        if len(written) > _SHOWN_AFTER:
            written = written[:_SHOWN_AFTER] + "…"
        return (
            f"{written!r} at character {at + 1} is not a reference: a name between ${{ and }} "
            f"is made of letters, digits, _ and ."
        )
    return None


def _start(text: str) -> str:
    return text if len(text) <= _SHOWN_AFTER else text[:_SHOWN_AFTER] + "…"


@dataclass(frozen=True, eq=False, slots=True)
class Pattern:
    source: str
    literals: tuple[bytes, ...]  # the text around references: len(refs) + 1 items
    refs: tuple[str, ...]  # referenced names, in order, repeats included
    # Expansion is one `bytes % tuple` with the values picked by an itemgetter: the
    # fastest form in CPython, and expand() runs for every task of every event.
    _template: bytes
    _pick: Callable[[Mapping[str, bytes]], Any] | None

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.refs)

    def expand(self, variables: Mapping[str, bytes]) -> bytes:
        """The pattern with every reference replaced; MissingVariable when one has no value."""
        if self._pick is None:
            return self._template
        try:
            expanded: bytes = self._template % self._pick(variables)
        except KeyError as exc:
            raise MissingVariable(exc.args[0]) from None
        return expanded

    def __str__(self) -> str:
        return self.source


def parse_pattern(source: str) -> Pattern:
    literals: list[bytes] = []
    refs: list[str] = []
    last = 0
    for m in _REFERENCE.finditer(source):
        literals.append(source[last : m.start()].encode("utf-8"))
        refs.append(m.group(1))
        last = m.end()
    literals.append(source[last:].encode("utf-8"))
    if not refs:
        return Pattern(source, tuple(literals), (), literals[0], None)
    template = b"%s".join(literal.replace(b"%", b"%%") for literal in literals)
    pick: Callable[[Mapping[str, bytes]], Any] = itemgetter(*refs)
    if len(refs) == 1:
        # A lone itemgetter returns the value itself, not a 1-tuple.
        single = pick

        def pick(variables: Mapping[str, bytes]) -> tuple[bytes]:
            return (single(variables),)

    return Pattern(source, tuple(literals), tuple(refs), template, pick)
