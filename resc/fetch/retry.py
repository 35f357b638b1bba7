"""When a fetch is retried, and how long it waits first.

Retried: no connection, timeouts (resc.fetch.client decides those), HTTP 429 and 5xx. Other
answers, 4xx among them, would get the same answer again: they fail at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

BACKOFF_CAP_S = 30.0
# A Retry-After header is obeyed up to this: a hostile or mistaken one cannot stall a
# watcher for hours.
RETRY_AFTER_CAP_S = 60.0


def retryable_status(status: int) -> bool:
    """Whether an answer with this status may be followed by a better one."""
    return status == 429 or 500 <= status <= 599


def backoff_delay_s(
    retry: int, backoff_s: float, rand: Callable[[], float] = random.random
) -> float:
    """The wait before retry number `retry` (0 for the first): "full jitter", random
    between 0 and backoff_s * 2**retry, at most BACKOFF_CAP_S. Random so that watchers
    that failed together do not retry together."""
    return rand() * min(BACKOFF_CAP_S, backoff_s * 2.0 ** min(retry, 32))


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header's wait (seconds, or an HTTP date), between 0 and
    RETRY_AFTER_CAP_S; None when there is none or it cannot be read."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # "-0000": UTC, said RFC 2822
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)
