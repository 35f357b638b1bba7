"""The outbox: how a batch whose events have results in other slots of a Redis Cluster
is committed exactly once, although a script may write only one slot.

1. In the watcher's slot, commit.lua removes each event from the taken list, pushes
   its results of that slot, and keeps its results for other slots in the instance's
   outbox (resc.core.keys.outbox), under the batch's id: all in one atomic step.
2. For each other slot, in parallel across the masters, apply.lua pushes that slot's
   results and writes the batch's marker there (marker()), in one atomic step: run
   again, it finds the marker and does nothing.
3. outbox_done.lua removes the entry (and fails the events of which a result could not
   be pushed: a key of the wrong type).
4. The writer deletes the markers, once it has seen every step-2 reply and removed the
   entry itself. An entry that someone else replays (below) keeps its markers until
   their time to live, MARKER_TTL_MS, ends.

A kill -9 between 1 and 3 leaves the entry in the outbox. The instance that restarts,
or any other once the dead one's heartbeat has expired, moves it into the watcher's
outbox of orphaned entries (recover.lua) and replays steps 2 and 3 before it takes new
events; the markers make the replay push nothing twice. A replay long after the
markers' time to live would push their slots' results again: MARKER_TTL_MS is far
longer than any recovery.

This module holds the entries' encoding and the markers' names; resc.engine.store
sends the scripts.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from resc.core.slots import SLOTS, hash_tag, slot_of
from resc.engine.rules import Result

# 30 days: an entry is replayed within a heartbeat's time to live of its writer's death,
# or when resc starts again.
MARKER_TTL_MS = 30 * 24 * 3600 * 1000


class Item(NamedTuple):
    """One result for another slot: of the event `number` of its batch (from 0), the one
    at `position` among the event's results."""

    number: int
    position: int
    event: bytes
    result: Result


def encode(event: bytes, results: Sequence[Result]) -> bytes:
    """An event's results for other slots, as commit.lua keeps them (concatenated with
    the other events' of the batch): netstrings of the event, the count, and per result
    its task, queue, set ('-' for none, else '+' and the name), rule and make (same)."""
    fields = [event, str(len(results)).encode()]
    for result in results:
        fields += (
            result.task,
            result.queue,
            b"-" if result.set is None else b"+" + result.set,
            result.rule.encode(),
            b"-" if result.make is None else b"+" + result.make.encode(),
        )
    return b"".join(b"%d:%s," % (len(field), field) for field in fields)


def decode(value: bytes) -> list[Item]:
    """The items of an entry (encode()'s, concatenated), numbered by event. ValueError
    when it is not one."""
    fields = _netstrings(value)
    items: list[Item] = []
    for number, event in enumerate(fields):
        for position in range(int(next(fields))):
            task, queue, dedup, rule, make = (next(fields) for _ in range(5))
            result = Result(task, queue, _optional(dedup), rule.decode(), _text(make))
            items.append(Item(number, position, event, result))
    return items


def _netstrings(value: bytes) -> Iterator[bytes]:
    at = 0
    while at < len(value):
        colon = value.index(b":", at)
        length = int(value[at:colon])
        end = colon + 1 + length
        if value[end : end + 1] != b",":
            raise ValueError(f"not an outbox entry at byte {at}")
        yield value[colon + 1 : end]
        at = end + 1


def _optional(field: bytes) -> bytes | None:
    if field == b"-":
        return None
    if not field.startswith(b"+"):
        raise ValueError("not an outbox entry: a set or make is neither '-' nor '+...'")
    return field[1:]


def _text(field: bytes) -> str | None:
    value = _optional(field)
    return None if value is None else value.decode()


def by_slot(items: Sequence[Item]) -> dict[int, list[Item]]:
    """The items grouped by their queue's slot, each group in the batch's order."""
    groups: dict[int, list[Item]] = {}
    for item in items:
        groups.setdefault(slot_of(item.result.queue), []).append(item)
    return groups


def marker(queue: bytes, batch: str) -> bytes:
    """The key in the slot of `queue` (the first of the batch's queues in that slot) that
    says the batch's results of that slot were applied: `resc/applied/{<tag>}/<batch>`,
    with the queue's hash tag, or its whole name when it has none; a name without a tag
    that holds a `}` (which would cut the tag short) takes the first of `s0`, `s1`, ...
    that hashes to its slot."""
    tag = hash_tag(queue)
    if tag is None:
        tag = queue if b"}" not in queue else slot_tag(slot_of(queue)).encode()
    return b"resc/applied/{" + tag + b"}/" + batch.encode()


@functools.cache
def slot_tag(slot: int) -> str:
    """The first name of the form s<n> whose hash slot is `slot` (about 16,000 names
    are hashed to find it)."""
    if not 0 <= slot < SLOTS:
        raise ValueError(f"slot {slot} is not one of the cluster's 0 to {SLOTS - 1}")
    n = 0
    while slot_of(f"s{n}") != slot:
        n += 1
    return f"s{n}"


_BATCH = re.compile(r"(?P<writer>[0-9a-f]+)-(?P<seq>\d+)")


def batch_order(batch: bytes) -> tuple[str, int]:
    """A sort key that replays a writer's entries in the order it wrote them."""
    found = _BATCH.fullmatch(batch.decode("ascii", "replace"))
    if found is None:
        return batch.decode("ascii", "replace"), 0
    return found["writer"], int(found["seq"])
