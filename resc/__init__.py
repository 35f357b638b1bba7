"""resc: turns events from Redis queues into deduplicated tasks, by regex rules."""

__version__ = "0.4.0"
