"""The edge every Redis client of resc shares: redis-py's errors turned into resc's,
the wait before reconnecting, and URLs made safe to show."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MasterDownError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)

from resc.core.errors import RedisUnavailable, StoreError

_WRONGTYPE = re.compile(r"WRONGTYPE (.*)")

# Error replies of a server that is no writable master for a moment (a failover, a
# replica loading its data): waited out like a lost connection, never a fault of the
# command.
NOT_A_MASTER_NOW = ("READONLY", "UNBLOCKED", "LOADING", "MASTERDOWN", "NOREPLICAS", "TRYAGAIN")

# Error replies of a cluster node that does not serve a key's slot now (it moved, is
# moving, or has no master), and NOSCRIPT from a master that took over after a failover
# (the script did not run): waited out like a lost connection, after which the caller
# asks the cluster again where the slot lives and loads its scripts again.
CLUSTER_MOVING = ("MOVED", "ASK", "CLUSTERDOWN", "NOSCRIPT")


# redis-py's classes for some of those replies, whose messages lose the first word.
_TRANSIENT_CLASSES = (
    redis.ReadOnlyError,
    AskError,  # and MovedError
    TryAgainError,
    ClusterDownError,  # and MasterDownError
    NoScriptError,
)


def reply_text(error: redis.ResponseError) -> str:
    """The error reply as the server wrote it: with the first word that redis-py drops
    when it picks a class for it (MOVED, ASK, TRYAGAIN, CLUSTERDOWN, NOSCRIPT...)."""
    for kind, word in (
        (MovedError, "MOVED"),
        (AskError, "ASK"),
        (TryAgainError, "TRYAGAIN"),
        (MasterDownError, "MASTERDOWN"),
        (ClusterDownError, "CLUSTERDOWN"),
        (NoScriptError, "NOSCRIPT"),
    ):
        if isinstance(error, kind):
            return f"{word} {error}"
    return str(error)


def is_transient_reply(error: redis.ResponseError) -> bool:
    """Whether an error reply says the server cannot run the command now (a failover, a
    slot on the move), rather than that the command is wrong."""
    return isinstance(error, _TRANSIENT_CLASSES) or str(error).startswith(
        (*NOT_A_MASTER_NOW, *CLUSTER_MOVING)
    )


# Waits between reconnection attempts: doubling from the first, up to the cap, each
# shortened by up to a fifth at random so that many watchers do not retry in step.
RECONNECT_FIRST_S = 0.1
RECONNECT_CAP_S = 5.0


def reconnect_delay_s(failures: int) -> float:
    """How long to wait before reconnecting after `failures` failed attempts in a row."""
    delay: float = min(RECONNECT_CAP_S, RECONNECT_FIRST_S * 2 ** min(failures, 16))
    return delay * (1 - random.random() / 5)


# How redis-py's RedisCluster says that it reached none of its nodes.
_CLUSTER_UNREACHABLE = "Redis Cluster cannot be connected"

_QUERY_PASSWORD = re.compile(r"([?&](?:sentinel_)?password=)[^&#]*")


def redact_url(url: str) -> str:
    """The URL with its passwords (in the user part, or a `password=` or
    `sentinel_password=` query parameter) replaced by ***, for messages and logs.

    The user part runs to the last `@`: a password may hold `@`, `:`, `/`, `?` or `#` as
    typed (redis-py splits at the last `@` too; an `@` in the query hides more than the
    password, never less). The user name, before the first `:`, is kept; without a `:`
    the whole user part is hidden, as it may be a password."""
    scheme, separator, rest = url.partition("://")
    if separator:
        at = rest.rfind("@")
        if at >= 0:
            user, colon, _ = rest[:at].partition(":")
            rest = f"{user}{colon}***{rest[at:]}" if colon else f"***{rest[at:]}"
        url = f"{scheme}{separator}{rest}"
    return _QUERY_PASSWORD.sub(r"\1***", url)


@contextmanager
def converted_errors(action: str) -> Iterator[None]:
    """redis-py's exceptions as resc's (see converted), each message starting with
    `action`."""
    try:
        yield
    except (redis.RedisError, RedisClusterException) as exc:
        raise converted(exc, action) from None


def converted(exc: redis.RedisError | RedisClusterException, action: str) -> StoreError:
    """redis-py's exception as resc's: RedisUnavailable for a lost connection or no answer
    or a server that is no writable master for now, StoreError for another error reply;
    its message starting with `action`. Without a context manager, for the commands of
    the event path, where a generator per command shows in the latency."""
    if isinstance(exc, redis.ConnectionError):
        return RedisUnavailable(f"{action}: connection lost: {exc}")
    if isinstance(exc, redis.TimeoutError):
        return RedisUnavailable(f"{action}: no answer from Redis: {exc}")
    if isinstance(exc, redis.ResponseError):
        if is_transient_reply(exc):
            return RedisUnavailable(
                f"{action}: Redis is not a writable master now: {reply_text(exc)}"
            )
        wrong_type = _WRONGTYPE.search(str(exc))
        return StoreError(f"{action}: {wrong_type[1] if wrong_type else exc}")
    if isinstance(exc, SlotNotCoveredError):
        return RedisUnavailable(f"{action}: the cluster serves no slot of the key now: {exc}")
    if isinstance(exc, redis.RedisError):
        return StoreError(f"{action}: {exc}")
    if str(exc).startswith(_CLUSTER_UNREACHABLE):
        return RedisUnavailable(f"{action}: {exc}")
    # redis-py's own refusals (keys of one command in several slots, say), which do not
    # derive from RedisError.
    return StoreError(f"{action}: {exc}")
