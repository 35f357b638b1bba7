"""The todo queues a config's makes name, with their dedup sets and set_ttl, and how the
names a pattern with variables makes are found (a SCAN glob) and recognised (a match
back to the pattern's variables). Pure: the callers read Redis."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from resc.config.models import Config
from resc.config.patterns import Pattern

_REFERENCE = re.compile(r"\$\{([\w.]+)\}")


@dataclass(frozen=True, slots=True)
class TodoSpec:
    """One todo queue pattern of the config, with what its makes say about it."""

    queue: Pattern
    set: Pattern | None  # the first make's set, when several makes name the queue
    set_ttl_s: float | None  # the longest set_ttl of those makes; None: never
    glob: str | None  # the SCAN glob listing its queues: queue_glob, else none

    @property
    def literal(self) -> bool:
        """True when the queue pattern has no variables: it names one queue."""
        return not self.queue.refs

    def set_of(self, queue: str) -> str | None:
        """The dedup set of a queue this pattern made; None without a set, or when the
        set's variables cannot be read from the queue's name."""
        if self.set is None:
            return None
        variables = match_pattern(self.queue, queue)
        if variables is None or not self.set.names <= variables.keys():
            return None
        encoded = {name: value.encode() for name, value in variables.items()}
        return self.set.expand(encoded).decode("utf-8", "backslashreplace")

    @property
    def default_glob(self) -> str:
        """The glob to scan for this pattern's queues: queue_glob, else every name the
        pattern can make."""
        return self.glob if self.glob is not None else glob_of(self.queue.source)


def todo_specs(config: Config) -> list[TodoSpec]:
    """Every todo queue pattern of the config's makes, once each, in config order."""
    found: dict[str, list[tuple[Pattern | None, float | None, str | None]]] = {}
    queues: dict[str, Pattern] = {}
    for watcher in config.watchers:
        for rule in watcher.rules:
            for make in rule.make:
                ttl = make.set_ttl if make.set_ttl is not None else watcher.set_ttl
                queues.setdefault(make.queue.source, make.queue)
                found.setdefault(make.queue.source, []).append(
                    (make.set, ttl if make.set is not None else None, make.queue_glob)
                )
    specs = []
    for source, makes in found.items():
        sets = [s for s, _, _ in makes if s is not None]
        ttls = [t for _, t, _ in makes if t is not None]
        globs = [g for _, _, g in makes if g is not None]
        specs.append(
            TodoSpec(
                queues[source],
                sets[0] if sets else None,
                max(ttls) if ttls else None,
                globs[0] if globs else None,
            )
        )
    return specs


def glob_of(pattern: str) -> str:
    """A SCAN glob matching every name a pattern can make: each ${name} becomes *."""
    literal = _REFERENCE.split(pattern)[::2]
    return "*".join(re.sub(r"([*?\[\]\\])", r"\\\1", part) for part in literal)


def match_pattern(pattern: Pattern, name: str) -> Mapping[str, str] | None:
    """The variables with which the pattern makes this name, or None when it cannot.
    A name that several splits would make is read with the shortest first values."""
    regex = "".join(
        re.escape(literal.decode()) + ("(.+?)" if i < len(pattern.refs) else "")
        for i, literal in enumerate(pattern.literals)
    )
    m = re.fullmatch(regex, name, re.DOTALL)
    if m is None:
        return None
    variables: dict[str, str] = {}
    for ref, value in zip(pattern.refs, m.groups(), strict=True):
        if variables.setdefault(ref, value) != value:
            return None
    return variables
