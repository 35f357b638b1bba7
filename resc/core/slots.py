"""Redis Cluster hash slots of key names, by the cluster's own rule: a key's slot is the
CRC16 of its hash tag (the text between its first `{` and the first `}` after it, when
that text is not empty), or of the whole name when it has none.

Every key resc derives from a configured name appends to it (resc.core.keys): a name
with a hash tag keeps it, so that a watcher's own keys all live in its input queue's
slot. A name without one does not: `orders/events` and `orders/events/taken` hash
apart.
"""

from __future__ import annotations

from redis.crc import key_slot

SLOTS = 16384


def hash_tag(key: str | bytes) -> bytes | None:
    """The key's hash tag, or None when it has none (no `{...}`, or an empty `{}`)."""
    name = key.encode("utf-8", "surrogateescape") if isinstance(key, str) else key
    start = name.find(b"{")
    if start < 0:
        return None
    end = name.find(b"}", start + 1)
    if end <= start + 1:
        return None
    return name[start + 1 : end]


def slot_of(key: str | bytes) -> int:
    """The key's hash slot, 0 to 16383."""
    name = key.encode("utf-8", "surrogateescape") if isinstance(key, str) else key
    return int(key_slot(name))


def same_slot(*keys: str | bytes) -> bool:
    """Whether all the keys hash to one slot (one script or command may use them all)."""
    return len({slot_of(key) for key in keys}) <= 1


def tagged(name: str) -> str:
    """The name with a hash tag, as a config should write it: its first path segment
    braced (`orders/events` -> `{orders}/events`, `events` -> `{events}`); a name that
    has one already is returned as it is."""
    if hash_tag(name) is not None:
        return name
    head, slash, rest = name.partition("/")
    if not head or "{" in head or "}" in head:
        # An empty first segment, or one whose braces are no tag: tag the whole name.
        return "{" + name.replace("{", "").replace("}", "") + "}"
    return "{" + head + "}" + slash + rest
