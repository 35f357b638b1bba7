"""Patterns: strings with `${name}` references, expanded with an event's variables.

Names are made of word characters and dots (`process_id`, `input_task`, `db.id`).
Anything else, a lone `$` or an unclosed `${`, is literal text, as in the original.
Variables are bytes, so events and tasks never pass through a decode/encode round trip.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from resc.errors import MissingVariable

_REFERENCE = re.compile(r"\$\{([\w.]+)\}")


@dataclass(frozen=True, eq=False, slots=True)
class Pattern:
    source: str
    literals: tuple[bytes, ...]  # the text around references: len(refs) + 1 items
    refs: tuple[str, ...]  # referenced names, in order, repeats included

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.refs)

    def expand(self, variables: Mapping[str, bytes]) -> bytes:
        """The pattern with every reference replaced; MissingVariable when one has no value."""
        literals = self.literals
        if not self.refs:
            return literals[0]
        out = [literals[0]]
        for ref, literal in zip(self.refs, literals[1:], strict=True):
            value = variables.get(ref)
            if value is None:
                raise MissingVariable(ref)
            out.append(value)
            out.append(literal)
        return b"".join(out)

    def expand_url(self, variables: Mapping[str, bytes]) -> str:
        """Like expand, but each value is percent-encoded, so that it cannot change the
        URL's path or query structure."""
        quoted = {
            name: quote(variables[name], safe="").encode("ascii")
            for name in self.refs
            if name in variables
        }
        return self.expand(quoted).decode("utf-8")

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
    return Pattern(source, tuple(literals), tuple(refs))
