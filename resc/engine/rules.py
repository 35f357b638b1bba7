"""Rules: event -> variables -> results. Pure: the only I/O, fetching, is passed in."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple

from resc.config.durations import parse_duration_s, parse_time_s
from resc.config.models import INPUT_TASK, Fetch, Make, Rule
from resc.config.patterns import Pattern
from resc.config.regex import RegexSet
from resc.core.errors import EventError
from resc.core.logs import get_logger

log = get_logger("resc.rules")
_debug_log = logging.getLogger("resc.rules")

# Calls a fetch with the rule's variables (its URL, headers and body are patterns);
# returns one mapping of `returns.field` variables per object.
FetchFunction = Callable[[Fetch, Mapping[str, bytes]], list[dict[str, bytes]]]
# The same on an event loop.
AsyncFetchFunction = Callable[[Fetch, Mapping[str, bytes]], Awaitable[list[dict[str, bytes]]]]

# With this many rules or more, one RE2 Set pass finds the matching ones; fewer are
# cheaper to try one by one.
_SET_FROM_RULES = 3


class Result(NamedTuple):
    """One task to push: `set` is the dedup set, or None for no deduplication; `make` is
    the name of the make that produced it, or None; `due` is when to push it (unix
    seconds, from the make's delay or at), or None for now."""

    task: bytes
    queue: bytes
    set: bytes | None
    rule: str
    make: str | None = None
    due: float | None = None


# A make's delay or at, from the event's variables and the time the event is processed
# to when its task is due.
When = Callable[[Mapping[str, bytes], float], float]
# A delay's or an at's text and that time to the due time.
_Parse = Callable[[str, float], float]


def _when(make: Make) -> When | None:
    """The due time of a make's tasks, or None for a make without delay or at."""
    if make.delay is not None:
        return _computed(make, "delay", make.delay, lambda text, now: now + parse_duration_s(text))
    if make.at is not None:
        return _computed(make, "at", make.at, lambda text, _: parse_time_s(text))
    return None


def _computed(make: Make, field: str, pattern: Pattern, parse: _Parse) -> When:
    what = f"make {make.name or make.queue.source}: {field}"
    if not pattern.refs:
        text = pattern.source  # checked when the config was loaded
        return lambda _, now: parse(text, now)

    def due(variables: Mapping[str, bytes], now: float) -> float:
        text = pattern.expand(variables).decode("utf-8", "replace")
        try:
            return parse(text, now)
        except ValueError as exc:
            raise EventError(f"{what}: {exc}") from None

    return due


class RuleSet:
    """A watcher's rules, ready to apply to events."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        self.fetches = any(rule.fetch for rule in self.rules)
        self._makes = tuple(
            tuple(
                (
                    m.task.expand,
                    m.queue.expand,
                    m.set.expand if m.set is not None else None,
                    m.name or None,
                    _when(m),
                )
                for m in rule.make
            )
            for rule in self.rules
        )
        self._set = (
            RegexSet([rule.on for rule in self.rules])
            if len(self.rules) >= _SET_FROM_RULES
            else None
        )

    def apply(
        self, event: bytes, fetch: FetchFunction, matched: list[str] | None = None
    ) -> list[Result]:
        """Every result of every rule matching `event`, in config order. The name of each
        matching rule is appended to `matched`, when given.

        Raises EventError (MissingVariable, FetchError) when the event cannot be processed.
        """
        results: list[Result] = []
        for i, rule, variables in self._fired(event, matched):
            if not rule.fetch:
                for task, queue, dedup, make, when in self._makes[i]:
                    results.append(
                        Result(
                            task(variables),
                            queue(variables),
                            dedup(variables) if dedup is not None else None,
                            rule.name,
                            make,
                            when(variables, time.time()) if when is not None else None,
                        )
                    )
                continue
            for fetcher in rule.fetch:
                for fields in fetch(fetcher, variables):
                    self._make(i, rule.name, {**variables, **fields}, results)
        return results

    async def apply_async(
        self, event: bytes, fetch: AsyncFetchFunction, matched: list[str] | None = None
    ) -> list[Result]:
        """apply, with the fetches awaited on an event loop."""
        results: list[Result] = []
        for i, rule, variables in self._fired(event, matched):
            if not rule.fetch:
                self._make(i, rule.name, variables, results)
                continue
            for fetcher in rule.fetch:
                for fields in await fetch(fetcher, variables):
                    self._make(i, rule.name, {**variables, **fields}, results)
        return results

    def _fired(
        self, event: bytes, matched: list[str] | None
    ) -> Iterator[tuple[int, Rule, dict[str, bytes]]]:
        """Each rule matching `event`, in config order: its index, itself and its
        variables (the event's named groups, and the event itself)."""
        rules = self.rules
        indexes: Iterable[int] = (
            self._set.matching(event) if self._set is not None else range(len(rules))
        )
        for i in indexes:
            rule = rules[i]
            variables = rule.on.search(event)
            if variables is None:
                continue
            variables[INPUT_TASK] = event
            if matched is not None:
                matched.append(rule.name)
            if _debug_log.isEnabledFor(logging.DEBUG):
                found = {k: v for k, v in variables.items() if k != INPUT_TASK}
                log.debug("rule fired", rule=rule.name, input_task=event, **found)
            yield i, rule, variables

    def _make(
        self, i: int, rule: str, variables: Mapping[str, bytes], results: list[Result]
    ) -> None:
        """The results of rule `i`'s makes for one set of variables, into `results`."""
        for task, queue, dedup, make, when in self._makes[i]:
            results.append(
                Result(
                    task(variables),
                    queue(variables),
                    dedup(variables) if dedup is not None else None,
                    rule,
                    make,
                    when(variables, time.time()) if when is not None else None,
                )
            )


def apply_rules(rules: Sequence[Rule], event: bytes, fetch: FetchFunction) -> list[Result]:
    """Every result of every rule matching `event`, in config order (see RuleSet.apply)."""
    return RuleSet(rules).apply(event, fetch)
