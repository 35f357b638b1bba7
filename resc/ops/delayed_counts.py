"""How many tasks wait in a todo queue's delayed sorted set `<queue>/delayed` (scored by
their due time), read with TYPE and ZCARD. None for a queue without one, or whose key
holds another type."""

from __future__ import annotations

from collections.abc import Sequence

import redis


def delayed_key(queue: str) -> str:
    return f"{queue}/delayed"


def read_delayed_counts(client: redis.Redis, queues: Sequence[str]) -> dict[str, int | None]:
    """Queue -> its delayed count (None: no such set). Raises redis-py's errors."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.type(delayed_key(queue))
        pipe.zcard(delayed_key(queue))
    replies = pipe.execute(raise_on_error=False)
    counts: dict[str, int | None] = {}
    for i, queue in enumerate(queues):
        kind, count = replies[2 * i], replies[2 * i + 1]
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        counts[queue] = int(count) if kind == "zset" and isinstance(count, int) else None
    return counts
