"""Durations and points in time written as text: one grammar for the config's duration
fields, a make's `delay` and `at`, and the HTTP API's query parameters.

A duration is a number of seconds, or a number with a unit: `500ms`, `30s`, `5m`, `12h`,
`7d`. A point in time is a number of unix seconds, or an RFC 3339 date and time with its
offset (`2026-12-01T08:00:00Z`, `2026-12-01T09:00:00+01:00`).
"""

from __future__ import annotations

import math
import re
from datetime import datetime

from resc.config.text import quoted

# Also the OpenAPI pattern of the API's duration parameters, so that clients know.
DURATION_PATTERN = r"^(\d{1,12})(\.\d{1,9})?(ms|s|m|h|d)?$"
_DURATION = re.compile(r"(\d{1,12})(\.\d{1,9})?\s*(ms|s|m|h|d)?")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_UNIX = re.compile(r"-?\d{1,12}(\.\d{1,9})?")


def parse_duration_s(text: str) -> float:
    """Seconds; ValueError saying what a duration looks like when `text` is none."""
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        raise ValueError(
            f"{quoted(text)} is not a duration: a number of seconds, or one with ms, s, m, h "
            "or d, like 500ms, 30s or 12h"
        )
    return float(found[1] + (found[2] or "")) * _UNIT_S[found[3]]


def parse_time_s(text: str) -> float:
    """Unix seconds; ValueError saying what a point in time looks like when `text` is
    none."""
    text = text.strip()
    if _UNIX.fullmatch(text):
        return float(text)
    problem = "is not a point in time"
    try:
        # RFC 3339 always has a time and an offset; fromisoformat also takes less.
        if "T" in text.upper() or " " in text:
            when = datetime.fromisoformat(text)
            if when.tzinfo is not None:
                seconds = when.timestamp()
                if math.isfinite(seconds):
                    return seconds
            problem = "has no offset (add Z for UTC, or +01:00)"
    except (ValueError, OverflowError):
        pass
    raise ValueError(
        f"{quoted(text)} {problem}: unix seconds, or an RFC 3339 time like 2026-12-01T08:00:00Z"
    )
