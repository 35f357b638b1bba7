"""Durations in query strings: `30s`, `500ms`, `5m`, `1h`, or a number of seconds."""

from __future__ import annotations

import re

# Also the OpenAPI pattern of these parameters, so that clients (and schemathesis) know.
DURATION_PATTERN = r"^(\d{1,12})(\.\d{1,6})?(ms|s|m|h)?$"
_DURATION = re.compile(DURATION_PATTERN)
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, None: 1000}


def parse_duration_ms(text: str, name: str, low_ms: int, high_ms: int) -> int:
    """Milliseconds, brought within [low_ms, high_ms]; ValueError with a message naming
    `name` when `text` is not a duration."""
    found = _DURATION.fullmatch(text)
    if found is None:
        raise ValueError(f"{name}: {text!r} is not a duration such as 30s, 500ms, 5m or 1h")
    value_ms = round(float(found[1] + (found[2] or "")) * _UNIT_MS[found[3]])
    return min(max(value_ms, low_ms), high_ms)
