"""Names of the Redis keys resc derives from configured ones."""

from __future__ import annotations


def default_taken_queue(input_queue: str) -> str:
    return f"{input_queue}/taken"


def default_failed_queue(input_queue: str) -> str:
    return f"{input_queue}/failed"


def failed_reasons(failed_queue: str) -> str:
    """Hash: failed event -> why it failed."""
    return f"{failed_queue}/reasons"


def attempts(taken_queue: str) -> str:
    """Hash: event -> how many times its processing was interrupted (resc killed, Redis
    connection lost) while it sat in the taken queue."""
    return f"{taken_queue}/attempts"
