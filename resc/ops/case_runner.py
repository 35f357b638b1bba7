"""Config unit tests (`resc test`): loading cases, running them without a Redis server or
network, and reporting each as a pass or a failure with a diff.

A case's events go through the same rules as in the daemon (resc.ops.explain.trace), with
its web services answered by the daemon's own fetch code over a stub transport: the
answer to a URL is the JSON given in the case's `fetch`, with status 200; a URL the case
does not list fails the case. Each event's outcome is then committed by the daemon's own
commit script to the case's in-memory Redis (resc.ops.case_store), one event after the
other: a task already in its set is deduplicated, a key of the wrong type fails the
event, and the listener's messages are those the daemon would publish. Tasks are
compared as a multiset: every expected task, no other, in any order.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic import ValidationError

from resc.config.cases import Case, CaseFile, ExpectedTask, Message, Step
from resc.config.load import located, validation_problems
from resc.config.models import Config
from resc.config.source import Loc, SourceFile, read_source
from resc.core.errors import ConfigError, RescError
from resc.core.words import counted
from resc.engine.store import Outcome
from resc.fetch.client import Fetcher
from resc.ops import explain
from resc.ops.case_store import CaseStore, Committed

# A task as compared: task, queue, set, and whether it was deduplicated (not pushed).
Task = tuple[bytes, bytes, bytes | None, bool]


@dataclass(frozen=True, slots=True)
class LoadedCase:
    """A case, with where it was written and the watcher that takes its event."""

    case: Case
    where: str  # file:line
    watcher: int


@dataclass(frozen=True, slots=True)
class Report:
    """A case's outcome, as printed."""

    passed: bool
    line: str  # PASS/FAIL, where, what
    details: list[str]  # why it failed: the diff


class _NotStubbed(RescError):
    def __init__(self, request: httpx.Request) -> None:
        super().__init__(f"{request.method} {request.url}")
        self.request = f"{request.method} {request.url}"


def default_test_file(config_path: Path) -> Path | None:
    """`conf.tests.hjson` (or `.tests.json`) next to `conf.hjson`, when there is one."""
    for suffix in (".hjson", ".json"):
        candidate = config_path.with_name(f"{config_path.stem}.tests{suffix}")
        if candidate.is_file():
            return candidate
    return None


def _locate(
    config: Config, source: SourceFile, cases: list[Case]
) -> tuple[list[LoadedCase], list[str]]:
    """Each case with its line and the index of its watcher, and the located problems of
    cases that name no usable watcher."""
    queues = [w.input_queue for w in config.watchers]
    loaded, problems = [], []
    for i, case in enumerate(cases):
        loc: Loc = ("tests", i)
        if case.queue is None and len(queues) > 1:
            problems.append(
                located(
                    source,
                    loc,
                    f"queue is required: the config has {len(queues)} watchers "
                    f"(input queues: {', '.join(queues)})",
                )
            )
        elif case.queue is not None and case.queue not in queues:
            problems.append(
                located(
                    source,
                    (*loc, "queue"),
                    f"no watcher takes events from {case.queue!r}; input queues: "
                    f"{', '.join(queues)}",
                )
            )
        elif config.listener_channel is None and any(
            step.expect_messages is not None for step in case.steps
        ):
            problems.append(
                located(
                    source,
                    loc,
                    "expect_messages: the config has no listener_channel, so no message is "
                    "published",
                )
            )
        else:
            watcher = 0 if case.queue is None else queues.index(case.queue)
            where = f"{source.path}:{source.line_of(loc)}"
            loaded.append(LoadedCase(case, where, watcher))
    return loaded, problems


def load_cases(config: Config, config_source: SourceFile, files: list[Path]) -> list[LoadedCase]:
    """The config's own cases, then each file's; ConfigError locating every fault."""
    loaded, problems = _locate(config, config_source, list(config.tests))
    for path in files:
        try:
            source = read_source(path)
        except ConfigError as exc:
            problems += exc.problems
            continue
        if not isinstance(source.data, dict):
            problems.append(f"{path}: a test file is an object: {{ tests: [ ... ] }}")
            continue
        try:
            cases = CaseFile.model_validate(source.data).tests
        except ValidationError as exc:
            problems += validation_problems(source, exc)
            continue
        found, located_problems = _locate(config, source, cases)
        loaded += found
        problems += located_problems
    if problems:
        raise ConfigError(problems)
    return loaded


def _stub_fetcher(case: Case) -> Fetcher:
    answers = {
        str(httpx.URL(url)): json.dumps(answer).encode("utf-8")
        for url, answer in case.fetch.items()
    }

    def answer(request: httpx.Request) -> httpx.Response:
        body = answers.get(str(request.url))
        if body is None:
            raise _NotStubbed(request)
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    return Fetcher(transport=httpx.MockTransport(answer))


def _as_bytes(value: str) -> bytes:
    # A lone surrogate (\udcff in a JSON string) stands for a byte that is not UTF-8.
    return value.encode("utf-8", "surrogateescape")


def _lines(sign: str, tasks: Counter[Task]) -> list[str]:
    return [
        f"  {sign} "
        + explain.result_line(
            explain.text(task), explain.text(queue), None if dedup is None else explain.text(dedup)
        )
        + (" (deduplicated)" if deduplicated else "")
        for (task, queue, dedup, deduplicated), n in sorted(
            tasks.items(), key=lambda item: (item[0][0], item[0][1], item[0][3])
        )
        for _ in range(n)
    ]


def _expected_tasks(expect: list[ExpectedTask]) -> Counter[Task]:
    return Counter(
        (
            _as_bytes(e.task),
            _as_bytes(e.queue),
            None if e.set is None else _as_bytes(e.set),
            e.deduplicated,
        )
        for e in expect
    )


def _check_tasks(step: Step, done: Committed) -> list[str]:
    """Why the event's tasks or failure are not the expected ones, or nothing."""
    made: Counter[Task] = Counter(
        (r.task, r.queue, r.set, not pushed) for r, pushed in done.results
    )
    if step.expect_failure is not None:
        if done.failure is None:
            n = sum(made.values())
            return [
                f"expected a failure with {step.expect_failure!r}, but the event makes "
                f"{counted(n, 'task')}:",
                *_lines("+", made),
            ]
        if step.expect_failure not in done.failure:
            return [f"expected a failure with {step.expect_failure!r}, got: {done.failure}"]
        return []
    expected = _expected_tasks(step.expect or [])
    if done.failure is not None:
        return [f"the event fails: {done.failure}", *_lines("-", expected)]
    if made == expected:
        return []
    return [
        "tasks differ (- expected, not made; + made, not expected):",
        *_lines("-", expected - made),
        *_lines("+", made - expected),
    ]


_ABSENT = object()


def _message_matches(expected: Message, published: bytes) -> bool:
    if isinstance(expected, str):
        return published == _as_bytes(expected)
    try:
        data = json.loads(published)
    except ValueError:
        return False
    return isinstance(data, dict) and all(
        data.get(name, _ABSENT) == value for name, value in expected.items()
    )


def _check_messages(expected: list[Message] | None, published: list[bytes]) -> list[str]:
    """Why the listener's messages are not the expected ones, or nothing."""
    if expected is None:
        return []
    if len(expected) == len(published) and all(
        _message_matches(e, p) for e, p in zip(expected, published, strict=True)
    ):
        return []
    return [
        "listener messages differ (- expected, + published):",
        *(
            f"  - {e if isinstance(e, str) else json.dumps(e, ensure_ascii=False)}"
            for e in expected
        ),
        *(f"  + {explain.text(p)}" for p in published),
    ]


def _run_step(
    loaded: LoadedCase, config: Config, fetcher: Fetcher, store: CaseStore, step: Step
) -> list[str]:
    """One event of a case through the rules and the commit: why it fails, or nothing."""
    event = _as_bytes(step.event)
    found = explain.trace(loaded.watcher, config.watchers[loaded.watcher], event, fetcher)
    if found.failure is not None:
        outcome = Outcome(event, failure=found.failure)
    else:
        outcome = Outcome(event, found.results or [])
    done = store.commit(outcome)
    return _check_tasks(step, done) + _check_messages(step.expect_messages, done.messages)


def run_case(config: Config, loaded: LoadedCase) -> Report:
    """Run one case: its events in turn through its watcher's rules, with stubbed
    fetches, each committed to the case's own in-memory Redis."""
    case = loaded.case
    steps = case.steps
    events = [explain.shown(_as_bytes(step.event)) for step in steps]
    if case.name is not None:
        label = case.name
    else:
        label = f"event {events[0]}" if len(events) == 1 else f"events {', '.join(events)}"
    fetcher = _stub_fetcher(case)
    store = CaseStore(config.watchers[loaded.watcher], config)
    details: list[str] = []
    try:
        for i, step in enumerate(steps):
            unanswered = False
            try:
                found = _run_step(loaded, config, fetcher, store, step)
            except _NotStubbed as exc:
                # The event's outcome is unknown, so the later events' would be too.
                stubbed = ", ".join(case.fetch) or "none"
                found = [f"{exc.request} has no answer in this case's fetch (stubbed: {stubbed})"]
                unanswered = True
            if found and case.events is not None:
                found = [f"events[{i}] {events[i]}:", *(f"  {line}" for line in found)]
            details += found
            if unanswered:
                break
    finally:
        fetcher.close()
        store.close()
    return Report(not details, f"{'FAIL' if details else 'PASS'} {loaded.where} {label}", details)
