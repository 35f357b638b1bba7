"""Which queues the API opens, and to whom: the queues a config lets it produce into and
consume from, and the bearer tokens of each role (read from the environment once, at
start; compared in constant time; never logged)."""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass

from resc.config.models import Config, HttpConfig
from resc.core.errors import RescError
from resc.server.claims import TodoQueue

ROLES = ("produce", "consume", "admin")


def produce_queues(config: Config, http: HttpConfig) -> frozenset[str]:
    """http.produce, or every watcher's input queue."""
    if http.produce is not None:
        return frozenset(http.produce)
    return frozenset(watcher.input_queue for watcher in config.watchers)


def todo_queues(config: Config, http: HttpConfig) -> dict[str, TodoQueue]:
    """The todo queues of the makes whose queue has no ${name} (their set too, when it
    has none either), or those of http.consume."""
    sets: dict[str, str | None] = {}
    for watcher in config.watchers:
        for rule in watcher.rules:
            for make in rule.make:
                if make.queue.refs:
                    continue
                name = make.queue.source
                set_name = make.set.source if make.set and not make.set.refs else None
                if sets.get(name) is None:
                    sets[name] = set_name
    names = http.consume if http.consume is not None else list(sets)
    return {name: TodoQueue(name, sets.get(name), http.zrem) for name in names}


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
