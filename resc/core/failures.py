"""What is kept about failed events and tasks, beside their failed lists.

Every failed list (a watcher's failed queue, a worker queue's `<queue>/failed`) has a hash
`<failed list>/reasons` (resc.core.keys.failed_reasons). Its field is the event or task
text; its value is a JSON array with one record per copy of that text in the failed list,
oldest first:

    [{"reason": "fetch failed: HTTP 503", "time": "1764620000.123456", "attempts": 2}, ...]

`time` is when the copy failed, in unix seconds as a string (it keeps its microseconds,
which a Lua number encoded by cjson would not). `attempts` is how many times it was tried.
When a copy leaves the failed list (moved back or deleted), the oldest record goes with it,
and the field is deleted with the last one. Identical copies cannot be told apart in a
list, so the oldest record stands for whichever copy leaves.

The Lua scripts write these records; Python reads them here. A value that is not a JSON
array (a plain reason string, as resc wrote before) is one copy with that reason and no
time or attempts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FailedRecord:
    """Why one copy of a failed event or task failed, when, after how many attempts."""

    reason: str
    time_s: float | None = None
    attempts: int | None = None


def decode(value: bytes | str | None) -> list[FailedRecord]:
    """The records of one field of a reasons hash, oldest first; [] for no value."""
    if value is None:
        return []
    text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value
    if text.startswith("["):
        try:
            items = json.loads(text)
        except ValueError:
            items = None
        if isinstance(items, list):
            return [_record(item) for item in items]
    return [FailedRecord(text)]


def _record(item: object) -> FailedRecord:
    if not isinstance(item, dict):
        return FailedRecord(str(item))
    time_s = item.get("time")
    attempts = item.get("attempts")
    try:
        parsed_time = float(time_s) if time_s is not None else None
    except (TypeError, ValueError):
        parsed_time = None
    return FailedRecord(
        reason=str(item.get("reason", "")),
        time_s=parsed_time,
        attempts=attempts if isinstance(attempts, int) and not isinstance(attempts, bool) else None,
    )


def encode(records: Sequence[FailedRecord]) -> str:
    """The value the Lua scripts write for these records (for tests and tools)."""
    return json.dumps(
        [
            {
                "reason": r.reason,
                **({"time": f"{r.time_s:.6f}"} if r.time_s is not None else {}),
                **({"attempts": r.attempts} if r.attempts is not None else {}),
            }
            for r in records
        ]
    )
