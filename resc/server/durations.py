"""Durations in query strings: `30s`, `500ms`, `5m`, `1h`, or a number of seconds."""

from __future__ import annotations

import re

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, None: 1000}


def parse_duration_ms(text: str, name: str, low_ms: int, high_ms: int) -> int:
    """Milliseconds; ValueError with a message naming `name` when not a duration within
    [low_ms, high_ms]."""
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        raise ValueError(f"{name}: {text!r} is not a duration such as 30s, 500ms, 5m or 1h")
    value_ms = round(float(found[1]) * _UNIT_MS[found[2]])
    if not low_ms <= value_ms <= high_ms:
        raise ValueError(
            f"{name}: {text!r} is not between {shown_ms(low_ms)} and {shown_ms(high_ms)}"
        )
    return value_ms


def shown_ms(value_ms: int) -> str:
    return f"{value_ms}ms" if value_ms % 1000 else f"{value_ms // 1000}s"
