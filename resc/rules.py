"""Rules: event -> variables -> results. Pure: the only I/O, fetching, is passed in."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from resc.config import INPUT_TASK, Fetch, Make, Rule
from resc.logs import get_logger

log = get_logger("resc.rules")

# Calls a fetch's URL; returns one mapping of `returns.field` variables per object.
FetchFunction = Callable[[Fetch, str], list[dict[str, bytes]]]


@dataclass(frozen=True, slots=True)
class Result:
    """One task to push: `set` is the dedup set, or None for no deduplication."""

    task: bytes
    queue: bytes
    set: bytes | None
    rule: str


def _make(rule: Rule, makes: Iterable[Make], variables: Mapping[str, bytes]) -> list[Result]:
    return [
        Result(
            make.task.expand(variables),
            make.queue.expand(variables),
            make.set.expand(variables) if make.set is not None else None,
            rule.name,
        )
        for make in makes
    ]


def apply_rules(rules: Iterable[Rule], event: bytes, fetch: FetchFunction) -> list[Result]:
    """Every result of every rule matching `event`, in config order.

    Raises EventError (MissingVariable, FetchError) when the event cannot be processed.
    """
    results: list[Result] = []
    for rule in rules:
        variables = rule.on.search(event)
        if variables is None:
            continue
        variables[INPUT_TASK] = event
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "rule fired",
                rule=rule.name,
                input_task=event,
                **{k: v for k, v in variables.items() if k != INPUT_TASK},
            )
        if not rule.fetch:
            results += _make(rule, rule.make, variables)
            continue
        for fetcher in rule.fetch:
            url = fetcher.url.expand_url(variables)
            for fields in fetch(fetcher, url):
                results += _make(rule, rule.make, {**variables, **fields})
    return results
