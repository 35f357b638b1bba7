"""Values and source text shown in messages, cut to a readable length.

A config value can be megabytes long, and a message that quotes it whole drowns the
terminal or the log line it goes to; messages show its start and say how long it was.
"""

from __future__ import annotations

# Most characters of a value, a field name or a source line that a message shows.
SHOWN_CHARS = 200


def shown(text: str) -> str:
    """`text` as it is, or its start, an ellipsis and its length when it is long."""
    if len(text) <= SHOWN_CHARS:
        return text
    return f"{text[:SHOWN_CHARS]}… ({len(text):,} characters)"


def quoted(value: str) -> str:
    """`repr(value)`, or the repr of its start with an ellipsis and its length."""
    if len(value) <= SHOWN_CHARS:
        return repr(value)
    return f"{value[:SHOWN_CHARS] + '…'!r} ({len(value):,} characters)"
