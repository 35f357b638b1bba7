"""Warnings of `resc check`: likely mistakes in a config the daemon accepts.

Only what can be known from the config is reported. Queue and set names are compared as
written: a pattern with variables is compared by its text, and the checks that need a
key's name (loops, resc's own queues) only look at patterns without variables.

- Same regex: all matching rules apply, so a rule whose `on` is written exactly as an
  earlier one's of the same watcher is not unreachable: it always fires together with
  it. Warned as "same regex as", or "identical to" when the whole rule is the same.
- A set used with two different queues: a task waiting in one is not pushed to the
  other. Also a set that is some make's queue (the event fails at commit).
- A loop: makes pushing into watchers' input queues in a cycle. A step of the loop stops
  it ("a regex guard") when its task has no variables and the regex of the next rule
  does not match it; a loop is reported when no step is known to stop it. Sets are not
  taken as guards.
- A make pushing into a watcher's taken or failed queue, or its reasons hash.
- Hjson values written without quotes that swallowed a comment, a comma or a closing
  bracket, which hjson keeps as text without complaint.

For a Redis Cluster (cluster_findings), per slot: an input queue without a hash tag, a
taken or failed queue outside the input queue's slot, a make whose set and queue do not
share a slot (errors), and a make whose queue is in another slot than the event's input
queue (a note: a cross-slot result).
"""

from __future__ import annotations

import json
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from resc.config.load import field_path, located
from resc.config.models import Config, Make, Rule
from resc.config.source import Loc, SourceFile
from resc.config.text import quoted, shown
from resc.core.keys import default_failed_queue, default_taken_queue, failed_reasons
from resc.core.slots import hash_tag, slot_of, tagged


@dataclass(frozen=True, slots=True)
class Finding:
    """One warning: its line (for ordering) and its located text."""

    line: int
    text: str


_COMMENT = re.compile(r"\s(#|//|/\*)")
_CLOSING = {"}": "{", "]": "["}


def _pitfall(value: str) -> str | None:
    comment = _COMMENT.search(value)
    if comment:
        return (
            f"unquoted value {quoted(value)} runs to the end of the line, so the comment "
            f"{quoted(value[comment.start() + 1 :])} is part of it: quote the value or put the "
            f"comment on a line of its own"
        )
    if value.endswith(","):
        return (
            f"unquoted value {quoted(value)} keeps its trailing comma: quote the value or "
            f"drop the comma"
        )
    return _swallowed_bracket(value)


def _swallowed_bracket(value: str) -> str | None:
    last = value[-1:]
    if last in _CLOSING and value.count(last) > value.count(_CLOSING[last]):
        return (
            f"unquoted value {quoted(value)} runs to the end of the line and keeps the {last!r} "
            f"meant to close the {'object' if last == '}' else 'array'}: quote the value "
            f"or put the {last} on the next line"
        )
    return None


def hjson_pitfalls(source: SourceFile) -> list[Finding]:
    """Unquoted Hjson values that took in a comment, a comma or a closing bracket."""
    findings = []
    for loc in source.quoteless:
        message = _pitfall(source.value_at(loc))
        if message is not None:
            findings.append(Finding(source.line_of(loc) or 0, located(source, loc, message)))
    return sorted(findings, key=lambda f: (f.line, f.text))


# An unquoted value on one line (with its trailing blanks): after `key:` at the start
# of a line or after `{` or `,`, or an array's first item after `[`.
_INLINE_VALUE = re.compile(
    r"""(?:(?:^|[{,])\s*(?:"[^"]*"|[^\s"',:{}\[\]]+)\s*:|\[)\s*([^\s"'{}\[\]#/].*)$"""
)


def syntax_hints(path: Path) -> list[Finding]:
    """For an Hjson file that does not parse: lines where an unquoted value seems to have
    swallowed a closing bracket, the usual cause of hjson's puzzling messages."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    findings = []
    for number, line in enumerate(lines, start=1):
        if line.lstrip().startswith(("#", "//")):
            continue
        match = _INLINE_VALUE.search(line)
        # Trailing blanks are cut here: a lazy `.*?\s*$` takes quadratic time on them.
        message = _swallowed_bracket(match.group(1).rstrip()) if match else None
        if message is not None:
            findings.append(Finding(number, f"{path}:{number}: {message}"))
    return findings


@dataclass(frozen=True, slots=True)
class _Step:
    """A make pushing into the input queue of watcher `target`."""

    watcher: int
    rule: int
    make: int
    target: int

    @property
    def loc(self) -> Loc:
        return ("watchers", self.watcher, "rules", self.rule, "make", self.make)


class _Linter:
    def __init__(self, config: Config, source: SourceFile) -> None:
        self.config = config
        self.source = source
        self.findings: list[Finding] = []

    def warn(self, loc: Loc, message: str) -> None:
        line = self.source.line_of(loc) or 0
        self.findings.append(Finding(line, located(self.source, loc, message)))

    def path(self, loc: Loc) -> str:
        return field_path(self.source, loc)

    def makes(self) -> list[tuple[Loc, Make]]:
        return [
            (("watchers", w, "rules", r, "make", m), make)
            for w, watcher in enumerate(self.config.watchers)
            for r, rule in enumerate(watcher.rules)
            for m, make in enumerate(rule.make)
        ]

    def same_regex(self) -> None:
        for w, watcher in enumerate(self.config.watchers):
            for j, later in enumerate(watcher.rules):
                same = [
                    i
                    for i, rule in enumerate(watcher.rules[:j])
                    if rule.on.source == later.on.source
                ]
                if not same:
                    continue
                twins = [i for i in same if _same_apart_from_name(watcher.rules[i], later)]
                if twins:
                    message = (
                        f"identical to rules[{twins[0]}] apart from its name: each of their "
                        f"tasks is made twice (pushed twice unless a set deduplicates it)"
                    )
                else:
                    message = (
                        f"same regex as rules[{same[0]}] ({shown(watcher.rules[same[0]].name)}): "
                        f"every matching rule applies, so these two always fire together"
                    )
                self.warn(("watchers", w, "rules", j, "on"), message)

    def sets(self) -> None:
        first_queue: dict[str, tuple[str, Loc]] = {}
        queues: dict[str, Loc] = {}
        for loc, make in self.makes():
            queues.setdefault(make.queue.source, loc)
        for loc, make in self.makes():
            if make.set is None:
                continue
            name = make.set.source
            if name in queues:
                self.warn(
                    (*loc, "set"),
                    f"{quoted(name)} is also a queue ({self.path(queues[name])}.queue): a key "
                    f"cannot be both a list and a sorted set; events that use both fail",
                )
            queue, where = first_queue.setdefault(name, (make.queue.source, loc))
            if queue != make.queue.source:
                self.warn(
                    (*loc, "set"),
                    f"set {quoted(name)} is also used with queue {quoted(queue)} "
                    f"({self.path(where)}): a task waiting in one of the queues is not pushed to "
                    f"the other; give each queue its own set",
                )

    def own_keys(self) -> None:
        owners: dict[str, tuple[int, str, str]] = {}
        for w, watcher in enumerate(self.config.watchers):
            input_queue, taken, failed = (
                watcher.input_queue,
                watcher.taken_queue,
                watcher.failed_queue,
            )
            for name, role, effect in (
                (
                    taken,
                    "taken queue",
                    f"a task there is taken for an event being processed, and moved to "
                    f"{quoted(input_queue)} when that watcher starts",
                ),
                (failed, "failed queue", "a task there is taken for an event that failed"),
                (
                    failed_reasons(failed),
                    "failed reasons hash",
                    "resc records there why events failed; tasks do not belong there",
                ),
            ):
                owners.setdefault(name, (w, role, effect))
        for loc, make in self.makes():
            for field in ("queue", "set"):
                pattern = getattr(make, field)
                if pattern is None or pattern.refs or pattern.source not in owners:
                    continue
                w, role, effect = owners[pattern.source]
                if w == loc[1]:
                    message = f"is this watcher's own {role}: events that push there fail"
                else:
                    message = f"is the {role} of watchers[{w}]: {effect}"
                self.warn((*loc, field), f"{quoted(pattern.source)} {message}")

    def loops(self) -> None:
        inputs = {watcher.input_queue: t for t, watcher in enumerate(self.config.watchers)}
        steps = [
            _Step(w, r, m, inputs[make.queue.source])
            for w, watcher in enumerate(self.config.watchers)
            for r, rule in enumerate(watcher.rules)
            for m, make in enumerate(rule.make)
            if not make.queue.refs and make.queue.source in inputs
        ]
        follows = {step: [n for n in steps if self._may_follow(step, n)] for step in steps}
        reported: set[_Step] = set()
        for step in steps:
            if step in reported:
                continue
            cycle = _shortest_cycle(step, follows)
            if cycle is None:
                continue
            reported.update(s for s in steps if _on_same_loop(step, s, follows))
            route = " -> ".join(
                f"{self.path(s.loc)} -> {shown(self.config.watchers[s.target].input_queue)}"
                for s in cycle
            )
            if any(self._rule(s).make[s.make].task.refs for s in cycle):
                why = (
                    "no step is known to stop an event going round (a step stops it when its "
                    "task has no variables and the next rule's regex does not match it)"
                )
            else:
                why = "it never ends: every task on it has no variables and matches the next rule"
            self.warn((*step.loc, "queue"), f"a loop: {route}; {why}")

    def _may_follow(self, step: _Step, next_step: _Step) -> bool:
        if next_step.watcher != step.target:
            return False
        task = self._rule(step).make[step.make].task
        if task.refs:
            return True
        return self._rule(next_step).on.search(task.source.encode("utf-8")) is not None

    def _rule(self, step: _Step) -> Rule:
        return self.config.watchers[step.watcher].rules[step.rule]


def _same_apart_from_name(a: Rule, b: Rule) -> bool:
    return a.model_dump(exclude={"name"}) == b.model_dump(exclude={"name"})


def _shortest_cycle(start: _Step, follows: dict[_Step, list[_Step]]) -> list[_Step] | None:
    """The shortest path from `start` back to itself, as its steps, or None."""
    came_from: dict[_Step, _Step] = {}
    queue = deque([start])
    while queue:
        step = queue.popleft()
        for nxt in follows[step]:
            if nxt == start:
                path = [step]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return path[::-1]
            if nxt not in came_from:
                came_from[nxt] = step
                queue.append(nxt)
    return None


def _on_same_loop(start: _Step, goal: _Step, follows: dict[_Step, list[_Step]]) -> bool:
    """Whether `goal` is on a loop through `start` (both reach each other)."""

    def reachable(a: _Step) -> set[_Step]:
        seen, todo = {a}, [a]
        while todo:
            for nxt in follows[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    return goal in reachable(start) and start in reachable(goal)


def warnings(config: Config, source: SourceFile) -> list[Finding]:
    """Every warning about a valid config, in the order of the file's lines."""
    linter = _Linter(config, source)
    linter.same_regex()
    linter.sets()
    linter.own_keys()
    linter.loops()
    return sorted(linter.findings + hjson_pitfalls(source), key=lambda f: (f.line, f.text))


# --- Redis Cluster: slots ------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\$\{[\w.]+\}")


@dataclass(frozen=True, slots=True)
class _Slot:
    """Where a queue or set name hashes: a known slot, or (for a name whose hash tag or
    whole text holds variables) the text that decides it, which only an identical text
    is known to share."""

    slot: int | None
    text: str

    def shares(self, other: _Slot) -> bool:
        if self.slot is not None and other.slot is not None:
            return self.slot == other.slot
        return self.slot is None and other.slot is None and self.text == other.text

    def shown(self) -> str:
        return f"slot {self.slot}" if self.slot is not None else f"the slot of {quoted(self.text)}"


def _masked(source: str) -> str:
    """The pattern with each `${name}` as `\0\0name\1`, of the same length: its braces
    are no hash tag's."""
    return _PLACEHOLDER.sub(lambda m: "\x00\x00" + m[0][2:-1] + "\x01", source)


def _slot(source: str) -> _Slot:
    # Variables are read as opaque names (their braces are no hash tag's).
    masked = _masked(source)
    tag = hash_tag(masked)
    decisive = masked if tag is None else tag.decode("utf-8", "surrogateescape")
    if "\x00" in decisive:
        return _Slot(None, decisive.replace("\x00\x00", "${").replace("\x01", "}"))
    return _Slot(slot_of(decisive if tag is None else "{" + decisive + "}"), decisive)


@dataclass(frozen=True, slots=True)
class SlotFindings:
    """What `resc check` says of a config for a Redis Cluster: errors (the config cannot
    run there) and notes (results committed across slots)."""

    errors: list[Finding]
    notes: list[Finding]


class _SlotLinter(_Linter):
    def __init__(self, config: Config, source: SourceFile) -> None:
        super().__init__(config, source)
        self.notes: list[Finding] = []

    def note(self, loc: Loc, message: str) -> None:
        line = self.source.line_of(loc) or 0
        self.notes.append(Finding(line, located(self.source, loc, message)))

    def own_slots(self) -> None:
        for w, watcher in enumerate(self.config.watchers):
            name = watcher.input_queue
            if hash_tag(name) is None:
                self.warn(
                    ("watchers", w, "input_queue"),
                    f"has no hash tag: in a Redis Cluster a watcher's own keys (its taken "
                    f"lists, failed queue, heartbeats) must live in its input queue's slot, "
                    f"which takes a tag; write input_queue: {_hjson(tagged(name))}",
                )
                continue
            home = slot_of(name)
            for field, key, default in (
                ("taken_queue", watcher.taken_queue, default_taken_queue(name)),
                ("failed_queue", watcher.failed_queue, default_failed_queue(name)),
            ):
                if key != default and slot_of(key) != home:
                    tag = hash_tag(name) or b""
                    self.warn(
                        ("watchers", w, field),
                        f"{quoted(key)} is in slot {slot_of(key)}, not in the input queue's "
                        f"slot {home}: a watcher's own keys must share it; give it the input "
                        f"queue's tag: write {field}: {_hjson(_with_tag(key, tag))}",
                    )

    def results(self) -> None:
        for loc, make in self.makes():
            watcher = self.config.watchers[int(loc[1])]
            queue = _slot(make.queue.source)
            if make.set is not None:
                dedup = _slot(make.set.source)
                if not dedup.shares(queue):
                    hint = _same_tag_hint(make.queue.source, make.set.source, queue)
                    self.warn(
                        (*loc, "set"),
                        f"set {quoted(make.set.source)} ({dedup.shown()}) and queue "
                        f"{quoted(make.queue.source)} ({queue.shown()}) do not share a slot: the "
                        f"dedup test and the push are one script, so in a Redis Cluster they "
                        f"must; {hint}",
                    )
                    continue
            if hash_tag(watcher.input_queue) is None:
                continue  # reported at the input queue
            home = _slot(watcher.input_queue)
            if queue.shares(home):
                continue
            write = f"write queue: {_hjson(_with_tag(make.queue.source, home.text.encode()))}"
            where = (
                f"{quoted(make.queue.source)} ({queue.shown()}) is not in the slot of the "
                f"input queue {quoted(watcher.input_queue)} ({home.shown()})"
            )
            both = " and its set" if make.set is not None else ""
            if make.delay is not None or make.at is not None:
                self.warn(
                    (*loc, "queue"),
                    f"{where}: in a Redis Cluster a delayed task's queue{both} must share "
                    f"its watcher's slot; give the queue{both} the input queue's tag: {write}",
                )
                continue
            self.note(
                (*loc, "queue"),
                f"{where}: a cross-slot result, committed exactly once through the outbox, "
                f"in two more round trips per batch; to commit it in the event's own step, "
                f"give the queue{both} the input queue's tag: {write}",
            )


def _with_tag(name: str, tag: bytes) -> str:
    """`name` with `tag` as its hash tag: in place of its own, or of its first path
    segment when that is the tag's text, or else in front."""
    text = tag.decode("utf-8", "surrogateescape")
    braced = "{" + text + "}"
    masked = _masked(name)
    if hash_tag(masked) is not None:
        start = masked.index("{")
        return name[:start] + braced + name[masked.index("}", start + 1) + 1 :]
    if name.startswith(text + "/"):
        return braced + name[len(text) :]
    return f"{braced}/{name}"


def _same_tag_hint(queue: str, dedup: str, slot: _Slot) -> str:
    if slot.slot is not None and hash_tag(_masked(queue)) is not None:
        return f"write set: {_hjson(_with_tag(dedup, slot.text.encode()))}"
    shared = []
    for a, b in zip(queue.split("/")[:-1], dedup.split("/")[:-1], strict=False):
        if a != b:
            break
        shared.append(a)
    common = "/".join(shared)
    untagged = hash_tag(_masked(queue)) is None and hash_tag(_masked(dedup)) is None
    if common and untagged:
        tag = "{" + common + "}"
        return (
            f"give both the same hash tag: write queue: {_hjson(tag + queue[len(common) :])} "
            f"and set: {_hjson(tag + dedup[len(common) :])}"
        )
    return "give both the same hash tag"


def _hjson(value: str) -> str:
    """A string as a config writes it, in double quotes (Hjson reads JSON strings)."""
    return json.dumps(value, ensure_ascii=False)


def cluster_findings(config: Config, source: SourceFile) -> SlotFindings:
    """The slot problems of a config meant for a Redis Cluster, reasoned per slot (two
    tags on one master are still two slots), in the order of the file's lines."""
    linter = _SlotLinter(config, source)
    linter.own_slots()
    linter.results()

    def ordered(findings: list[Finding]) -> list[Finding]:
        return sorted(findings, key=lambda f: (f.line, f.text))

    return SlotFindings(ordered(linter.findings), ordered(linter.notes))
