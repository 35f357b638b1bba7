"""Counts in messages: "1 event", "2 events"."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and the noun, singular for exactly 1; `plural` when adding "s" is wrong."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
