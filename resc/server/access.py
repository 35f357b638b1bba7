"""Which queues the API opens, and to whom: the queues a config lets it produce into and
consume from, and the bearer tokens of each role (read from the environment once, at
start; compared in constant time; never logged)."""

from __future__ import annotations

import hmac
import os
import re
from dataclasses import dataclass

from resc.config.models import Config, HttpConfig, Make
from resc.config.patterns import Pattern
from resc.core.errors import RescError
from resc.server.claims import TodoQueue

ROLES = ("produce", "consume", "admin")


def produce_queues(config: Config, http: HttpConfig) -> frozenset[str]:
    """http.produce, or every watcher's input queue."""
    if http.produce is not None:
        return frozenset(http.produce)
    return frozenset(watcher.input_queue for watcher in config.watchers)


def todo_queues(config: Config, http: HttpConfig) -> dict[str, TodoQueue]:
    """The todo queues of the makes whose queue has no ${name}, or those of
    http.consume; each with the set of the make that pushes into it."""
    makes = [m for w in config.watchers for rule in w.rules for m in rule.make]
    if http.consume is None:
        names = list(dict.fromkeys(m.queue.source for m in makes if not m.queue.refs))
    else:
        names = http.consume
    return {name: TodoQueue(name, _set_of(name, makes), http.zrem) for name in names}


def _set_of(queue: str, makes: list[Make]) -> str | None:
    """The dedup set of the first make whose queue pattern gives `queue` and whose set
    pattern is known from it: trt/${p}/todo-queue gives trt/plantA/todo-queue with
    p = plantA, so its set trt/${p}/todo-set is trt/plantA/todo-set."""
    for make in makes:
        if make.set is None:
            continue
        values = _values(make.queue, queue)
        if values is None or not set(make.set.refs) <= set(values):
            continue
        parts = [make.set.literals[0].decode()]
        for ref, literal in zip(make.set.refs, make.set.literals[1:], strict=True):
            parts += [values[ref], literal.decode()]
        return "".join(parts)
    return None


def _values(pattern: Pattern, text: str) -> dict[str, str] | None:
    """The values of the references of `pattern` that give `text`, or None."""
    regex = re.escape(pattern.literals[0].decode())
    groups: dict[str, str] = {}
    for ref, literal in zip(pattern.refs, pattern.literals[1:], strict=True):
        if ref in groups:
            regex += f"(?P={groups[ref]})"
        else:
            groups[ref] = f"g{len(groups)}"
            regex += f"(?P<{groups[ref]}>.+?)"
        regex += re.escape(literal.decode())
    found = re.fullmatch(regex, text)
    if found is None:
        return None
    return {ref: found[group] for ref, group in groups.items()}


@dataclass(frozen=True)
class Tokens:
    """The token of each role that has one."""

    by_role: dict[str, bytes]

    @classmethod
    def from_environment(cls, http: HttpConfig) -> Tokens:
        by_role = {}
        for role in ROLES:
            variable = getattr(http.tokens, role)
            if variable is None:
                continue
            value = os.environ.get(variable, "")
            if not value:
                raise RescError(
                    f"http.tokens.{role}: the environment variable {variable} is not set "
                    "(or empty): resc will not open the API without its token"
                )
            by_role[role] = value.encode()
        return cls(by_role)

    def required(self, role: str) -> bool:
        """Whether the paths of `role` ask for a token."""
        return role in self.by_role or "admin" in self.by_role

    def accepts(self, role: str, given: str) -> bool:
        candidate = given.encode()
        # Every comparison is made, so the time taken says nothing about which matched.
        matches = [
            hmac.compare_digest(candidate, self.by_role[r])
            for r in (role, "admin")
            if r in self.by_role
        ]
        return any(matches)
