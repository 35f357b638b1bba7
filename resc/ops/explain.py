"""What a watcher would do with one event, rule by rule, without Redis: for `resc explain`
and `resc test`.

The results come from resc.engine.rules.apply_rules, applied to one matching rule at a time so
that each rule's variables, fetches, tasks or failure can be shown. The verdict is the
daemon's: an event whose rules fail goes to the failed queue with the first failing
rule's reason, and pushes nothing. Checks the daemon makes when it commits, against
Redis (a key of the wrong type, a key used as both a queue and a set, the watcher's own
queues) are not simulated; `resc check` warns about those it can see in the config.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from resc.config.models import INPUT_TASK, Fetch, Rule
from resc.config.models import Watcher as WatcherConfig
from resc.config.patterns import Pattern
from resc.core.errors import EventError, FetchError
from resc.core.words import counted
from resc.engine.rules import FetchFunction, Result, apply_rules
from resc.fetch.request import shown_url


@dataclass(frozen=True, slots=True)
class FetchTrace:
    """One fetch of a rule: its request (the URL with `${env.NAME}` unexpanded), and the
    objects it answered when it was called."""

    returns: str
    method: str
    url: str
    called: bool
    objects: list[dict[str, bytes]] | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """A rule that matched the event. `results` is None when it failed, or when it
    depends on fetches that were not called."""

    index: int
    rule: Rule
    variables: dict[str, bytes]  # its named groups that took part in the match
    fetches: list[FetchTrace]
    results: list[Result] | None
    failure: str | None = None


@dataclass(frozen=True, slots=True)
class WatcherTrace:
    """A watcher's verdict on an event: its tasks (None while fetches were not called) or
    the reason it fails; and the rules that matched."""

    index: int
    watcher: WatcherConfig
    rules: list[RuleTrace]
    results: list[Result] | None
    failure: str | None = None


def _trace_rule(
    index: int, rule: Rule, event: bytes, fetch: FetchFunction | None
) -> RuleTrace | None:
    groups = rule.on.search(event)
    if groups is None:
        return None
    if rule.fetch and fetch is None:
        variables = {**groups, INPUT_TASK: event}
        fetches: list[FetchTrace] = []
        for fetcher in rule.fetch:
            try:
                url = shown_url(fetcher, variables)
            except EventError as exc:
                return RuleTrace(index, rule, groups, fetches, None, str(exc))
            fetches.append(FetchTrace(fetcher.returns, fetcher.method, url, called=False))
        return RuleTrace(index, rule, groups, fetches, None)

    calls: list[FetchTrace] = []

    def recording(fetcher: Fetch, variables: Mapping[str, bytes]) -> list[dict[str, bytes]]:
        assert fetch is not None  # only rules with fetches call it, and then it is given
        url = shown_url(fetcher, variables)
        try:
            objects = fetch(fetcher, variables)
        except FetchError as exc:
            calls.append(FetchTrace(fetcher.returns, fetcher.method, url, True, error=str(exc)))
            raise
        calls.append(FetchTrace(fetcher.returns, fetcher.method, url, True, objects))
        return objects

    try:
        results = apply_rules([rule], event, recording)
    except EventError as exc:
        return RuleTrace(index, rule, groups, calls, None, str(exc))
    return RuleTrace(index, rule, groups, calls, results)


def trace(
    index: int, watcher: WatcherConfig, event: bytes, fetch: FetchFunction | None
) -> WatcherTrace:
    """What watchers[index] does with `event`. With `fetch` None, fetch rules only show
    their URLs."""
    try:
        event.decode("utf-8")
    except UnicodeDecodeError as exc:
        # The daemon's own check and reason (resc.engine.watcher).
        return WatcherTrace(index, watcher, [], [], f"event is not UTF-8 text: {exc}")
    rules = [
        found
        for i, rule in enumerate(watcher.rules)
        if (found := _trace_rule(i, rule, event, fetch)) is not None
    ]
    failure = next((r.failure for r in rules if r.failure is not None), None)
    if failure is not None:
        return WatcherTrace(index, watcher, rules, [], failure)
    if any(r.results is None for r in rules):
        return WatcherTrace(index, watcher, rules, None)
    return WatcherTrace(index, watcher, rules, [x for r in rules for x in r.results or ()])


# --- presentation ---------------------------------------------------------------------


def text(value: bytes | str) -> str:
    """A value as shown: bytes that are not UTF-8 as \\x escapes."""
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def shown(value: bytes | str) -> str:
    """A value in a `key=value` line: quoted when it has spaces, quotes or nothing."""
    plain = text(value)
    if plain and plain.isprintable() and not any(c in plain for c in ' "='):
        return plain
    return json.dumps(plain, ensure_ascii=False)


def _partial(pattern: Pattern, variables: Mapping[str, bytes]) -> str:
    """A pattern with the variables known so far expanded, the others left as ${name}."""
    out = [text(pattern.literals[0])]
    for ref, literal in zip(pattern.refs, pattern.literals[1:], strict=True):
        value = variables.get(ref)
        out.append(text(value) if value is not None else f"${{{ref}}}")
        out.append(text(literal))
    return "".join(out)


def result_line(task: str, queue: str, dedup: str | None, due: float | None = None) -> str:
    line = f"task={shown(task)} queue={shown(queue)}"
    line += f" set={shown(dedup)}" if dedup is not None else ""
    return line + (f" due={_iso(due)} (in {due - time.time():.1f} s)" if due is not None else "")


def _iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="milliseconds")


def _verdict(found: WatcherTrace) -> str:
    if found.failure is not None:
        return f"fails, to {found.watcher.failed_queue}: {found.failure}"
    if found.results is None:
        known = sum(len(r.results or ()) for r in found.rules)
        return (
            f"{counted(known, 'task')} known; more may come from the fetches not called "
            f"(--fetch calls them)"
        )
    if not found.rules:
        return "no rule matches: no task"
    return counted(len(found.results), "task")


def _rule_lines(found: RuleTrace, event: bytes) -> list[str]:
    rule = found.rule
    names = " ".join(f"{k}={shown(v)}" for k, v in found.variables.items())
    missing = [n for n in rule.on.group_names if n not in found.variables]
    if missing:
        names += f" (no value: {', '.join(missing)})"
    lines = [f"    rules[{found.index}] {shown(rule.name)} matches: {names or '(no groups)'}"]
    for call in found.fetches:
        where = f"      fetch {call.returns}: {call.method} {call.url}"
        if not call.called:
            lines.append(f"{where} (not called)")
        elif call.error is not None:
            lines.append(f"{where}: failed")
        else:
            objects = call.objects or []
            lines.append(f"{where}: {counted(len(objects), 'object')}")
            lines += [
                "        " + " ".join(f"{k}={shown(v)}" for k, v in sorted(obj.items()))
                for obj in objects
            ]
    if found.failure is not None:
        lines.append(f"      fails: {found.failure}")
    elif found.results is None:
        variables = {**found.variables, INPUT_TASK: event}
        for make in rule.make:
            dedup = _partial(make.set, variables) if make.set is not None else None
            lines.append(
                "      per object: "
                + result_line(
                    _partial(make.task, variables), _partial(make.queue, variables), dedup
                )
            )
    else:
        lines += [
            "      "
            + result_line(
                text(r.task), text(r.queue), None if r.set is None else text(r.set), r.due
            )
            for r in found.results
        ]
    return lines


def render_text(event: bytes, traces: list[WatcherTrace]) -> list[str]:
    """The human-readable explanation of one event."""
    lines = [f"event {shown(event)}"]
    for found in traces:
        lines.append(f"  watchers[{found.index}] {found.watcher.input_queue}: {_verdict(found)}")
        for rule in found.rules:
            lines += _rule_lines(rule, event)
    return lines


def _result_json(result: Result) -> dict[str, Any]:
    return {
        "task": text(result.task),
        "queue": text(result.queue),
        "set": None if result.set is None else text(result.set),
        "rule": result.rule,
        "due": None if result.due is None else _iso(result.due),
    }


def _vars_json(variables: Mapping[str, bytes]) -> dict[str, str]:
    return {name: text(value) for name, value in variables.items()}


def to_json(event: bytes, traces: list[WatcherTrace]) -> dict[str, Any]:
    """The explanation of one event as JSON data, for scripts."""
    return {
        "event": text(event),
        "watchers": [
            {
                "index": found.index,
                "input_queue": found.watcher.input_queue,
                "outcome": "fails"
                if found.failure is not None
                else ("incomplete" if found.results is None else "tasks"),
                "failure": found.failure,
                "failed_queue": found.watcher.failed_queue,
                "tasks": None
                if found.results is None
                else [_result_json(r) for r in found.results],
                "rules": [
                    {
                        "index": rule.index,
                        "name": rule.rule.name,
                        "variables": _vars_json(rule.variables),
                        "fetches": [
                            {
                                "returns": call.returns,
                                "method": call.method,
                                "url": call.url,
                                "called": call.called,
                                "objects": None
                                if call.objects is None
                                else [_vars_json(obj) for obj in call.objects],
                                "error": call.error,
                            }
                            for call in rule.fetches
                        ],
                        "tasks": None
                        if rule.results is None
                        else [_result_json(r) for r in rule.results],
                        "failure": rule.failure,
                    }
                    for rule in found.rules
                ],
            }
            for found in traces
        ],
    }
