"""Redis: the only module that talks to it. Loads the Lua scripts of resc/engine/lua once.

Commands that change queues are sent without client retries: a retried command whose
reply was lost would run twice (a commit pushing its tasks twice, a take leaving an
event in the taken queue that nobody processes). After a connection error the caller
recovers the taken queue instead, which is the truth about what is committed.

On a Redis Cluster each command goes to the master that serves its (first) key's slot,
on a connection per master, where the scripts are loaded when it is made; a watcher's
keys all live in its input queue's slot (resc.core.slots), so its commands use one.
A reply saying that the slot is served elsewhere now (MOVED, ASK, CLUSTERDOWN,
TRYAGAIN, UNBLOCKED after a failover) or that the scripts are missing (NOSCRIPT, a new
master) counts as a lost connection: nothing more is read from it, and the next
command asks the cluster again where the slots live.
"""

from __future__ import annotations

import functools
import itertools
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from hashlib import sha1
from importlib.resources import files
from typing import Any, Generic, NamedTuple, TypeVar

import hiredis
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from resc.config.models import EMBEDDED_REDIS
from resc.config.redis_url import is_cluster_url
from resc.connection.clients import cluster_client, connection_pool, master_moved
from resc.connection.edge import (
    converted,
    converted_errors,
    is_transient_reply,
    redact_url,
    reply_text,
)
from resc.core.errors import HeartbeatLost, RedisUnavailable, StoreError
from resc.core.failures import FailedRecord, decode
from resc.core.keys import (
    DELAYED,
    DELAYED_COUNTER,
    attempts,
    delayed_queues,
    failed_reasons,
    instances,
    orphaned_outbox,
    outbox,
    taken_ahead,
    taken_owner,
)
from resc.core.logs import get_logger
from resc.core.slots import slot_of
from resc.engine import outbox as outboxes
from resc.engine.rules import Result

# The scripts' texts, as they are loaded (by their SHA-1).
SCRIPTS = {
    name: (files("resc.engine") / "lua" / f"{name}.lua").read_text("utf-8")
    for name in ("take", "recover", "commit", "replay", "heartbeat", "apply", "outbox_done")
}
# The libraries of resc/engine/lua/lib, put in front of the scripts that use them.
_LIBRARIES = {
    "failure_records": ("commit", "recover", "outbox_done", "replay"),
    "messages": ("commit", "apply"),
    "key_types": ("heartbeat", "recover", "replay", "outbox_done"),
}
for _library, _users in _LIBRARIES.items():
    _text = (files("resc.engine") / "lua" / "lib" / f"{_library}.lua").read_text("utf-8")
    for _name in _users:
        SCRIPTS[_name] = _text + "\n" + SCRIPTS[_name]

# On a cluster the scripts are loaded as each master's connection is made, after the
# first command to it is built: that command names them by these, the SHA-1s of the
# flagged text that _load_scripts loads (Redis 7 and later).
_SHEBANG = "#!lua\n"
_CLUSTER_SHA = {
    name: sha1((_SHEBANG + source).encode()).hexdigest() for name, source in SCRIPTS.items()
}

# How long a commit waits for replicas (redis.wait_replicas), milliseconds.
_WAIT_MS = 1000
log = get_logger("resc.store")

# A blocking take waits this long, so that a stop request is seen promptly.
BLOCK_TIMEOUT_S = 1.0

T = TypeVar("T")


class Listener(NamedTuple):
    """Where and how commits announce what they did (the config's listener_channel)."""

    channel: str
    json: bool  # listener_format json: one JSON object per message
    watcher: str  # named in JSON messages


class Recovered(NamedTuple):
    """What a recovery did with the events of a taken list (all 0 when its holder was
    alive: see Store.recover)."""

    back: int  # put back into the input queue
    failed: int  # interrupted max_attempts times: moved to the failed queue
    interrupted: int  # of those put back, the ones that were being processed
    entries: int = 0  # outbox entries of a holder gone for good, moved to be replayed


class Replayed(NamedTuple):
    """What a replay of outbox entries did (Store.replay_outbox)."""

    entries: int  # entries applied and removed here
    pushed: int  # tasks pushed now (the others had been pushed before the replay)
    deduplicated: int  # tasks found in their set
    failed: int  # events moved to the failed queue: a key of the wrong type


class Outcome(NamedTuple):
    """What to commit for one event: its results, or the reason it failed."""

    event: bytes
    results: Sequence[Result] = ()
    failure: str | None = None


@dataclass(frozen=True, slots=True)
class CommitReport:
    """Per event, in order: 'c' committed, 'f' failed, 'm' missing from the taken queue;
    `pushed[i]` tells for each result of a committed event whether it was pushed (True)
    or already in its set (False)."""

    status: str
    pushed: list[list[bool]]
    failures: dict[int, str]  # events that failed at commit time: index -> reason


class Reply(Generic[T]):
    """The reply to a command already sent; get() reads it (and every reply before it)."""

    def __init__(self, store: Store, action: str, convert: Callable[[Any], T]) -> None:
        self._store = store
        self.action = action
        self._convert = convert
        self._done = False
        self._value: Any = None
        self._error: redis.ResponseError | None = None
        self._unavailable = False

    def _receive(self, value: Any, unavailable: bool = False) -> None:
        self._done = True
        self._unavailable = unavailable
        if isinstance(value, redis.ResponseError):
            self._error = value
        else:
            self._value = value

    def get(self) -> T:
        if not self._done:
            self._store._read_until(self)
        if self._error is not None and self._unavailable:
            raise RedisUnavailable(
                f"{self.action}: the cluster serves the slot elsewhere now: "
                f"{reply_text(self._error)}"
            )
        if self._error is not None:
            # A script's own type check answers "WRONGTYPE <key> holds a <type>, ...".
            message = str(self._error).removeprefix("WRONGTYPE ")
            raise StoreError(f"{self.action}: {message}")
        return self._convert(self._value)


class Store:
    """One connection to Redis, for one watcher. Commands can be pipelined: send_*()
    return a Reply at once, and replies are read in the order the commands were sent."""

    def __init__(
        self, url: str, pool: redis.ConnectionPool | None = None, wait_replicas: int = 0
    ) -> None:
        """`pool`: connections to use instead of those made from `url` (which then only
        names the server in messages), for an in-memory server. `wait_replicas`: the
        replicas that must acknowledge a commit's writes in other slots of a cluster
        (redis.wait_replicas)."""
        self.url = url
        self.wait_replicas = wait_replicas
        self.display_url = redact_url(url)
        if url == EMBEDDED_REDIS:
            raise StoreError(
                'redis.url is "embedded": that server lives only while `resc run` runs it; '
                "use the URL it printed at start"
            )
        # A watcher's connection is never idle for long (it waits in BLMOVE for
        # BLOCK_TIMEOUT_S at most), so the socket timeout is its health check; TCP
        # keepalive also finds a peer that vanished from the network.
        tcp = {} if url.startswith("unix:") else {"socket_keepalive": True}
        self._options: dict[str, Any] = {
            "socket_timeout": BLOCK_TIMEOUT_S + 10,
            "socket_connect_timeout": 5,
            "retry": Retry(NoBackoff(), 0),
            "client_name": "resc",
            **tcp,
        }
        # A cluster: its client knows the slots' masters (made at the first connection, as
        # it connects at once); a plain URL of a cluster node is found to be one at
        # connect().
        self._cluster: RedisCluster | None = None
        self._on_cluster = pool is None and is_cluster_url(url)
        self._pool: redis.ConnectionPool | None = None
        if not self._on_cluster:
            self._pool = pool or connection_pool(url, **self._options)
        self._own_pool = pool is None
        self._conn: Any = None
        # On a cluster: a connection per master (by node name), and whether the slots'
        # masters must be asked again before the next command.
        self._conns: dict[str, tuple[redis.ConnectionPool, Any]] = {}
        self._stale = False
        self._pending: deque[tuple[Any, Reply[Any]]] = deque()
        self._has_lmove = True
        # Outbox entries' batch ids: this Store's, and their number (resc.engine.outbox).
        self._writer = secrets.token_hex(6)
        self._batches = itertools.count(1)
        self._sha = {name: sha1(source.encode()).hexdigest() for name, source in SCRIPTS.items()}
        if self._on_cluster:
            self._sha = _CLUSTER_SHA.copy()

    @property
    def on_cluster(self) -> bool:
        """Whether the Store talks to a Redis Cluster (known for a plain URL after
        connect())."""
        return self._on_cluster

    def close(self) -> None:
        self._broken()
        if self._pool is not None:
            self._pool.disconnect()
        if self._cluster is not None:
            self._cluster.close()

    # --- the connection -----------------------------------------------------------

    def _send(
        self,
        args: tuple[Any, ...],
        action: str,
        convert: Callable[[Any], T],
        route: bytes | str | None = None,
    ) -> Reply[T]:
        """Send a command; on a cluster to the master of its first key's slot, or of
        `route`'s (a command without keys)."""
        reply: Reply[T] = Reply(self, action, convert)
        # A master that the sentinels replaced may still answer as one: nothing more is
        # sent to it (the caller recovers its taken queue on the new master).
        if self._conn is not None and (moved := master_moved(self._conn)):
            self._broken()
            raise RedisUnavailable(f"{action}: {moved}")
        try:
            conn = self._connection(args, route)
            conn.send_packed_command([hiredis.pack_command(args)])
        except BaseException as exc:
            self._broken()
            if isinstance(exc, redis.RedisError | RedisClusterException):
                raise converted(exc, action) from None
            raise
        self._pending.append((conn, reply))
        return reply

    def _connection(self, args: tuple[Any, ...], route: bytes | str | None = None) -> Any:
        if not self._on_cluster:
            if self._conn is None:
                assert self._pool is not None
                self._conn = self._pool.get_connection()
            return self._conn
        if self._cluster is None:
            self._cluster = cluster_client(self.url, **self._options)
        elif self._stale:
            self._cluster.nodes_manager.initialize()
        self._stale = False
        key = _first_key(args) if route is None else route
        if key is None:
            raise StoreError(f"{args[0]!r} names no key, so no slot of the cluster")
        node = self._cluster.nodes_manager.get_node_from_slot(slot_of(key))
        known = self._conns.get(node.name)
        if known is not None:
            return known[1]
        pool = node.redis_connection.connection_pool
        conn = pool.get_connection()
        self._conns[node.name] = (pool, conn)
        self._load_scripts(conn)
        return conn

    def _master_of(self, slot: int) -> str:
        """The name of the master that serves `slot` (on a cluster)."""
        assert self._cluster is not None
        return str(self._cluster.nodes_manager.get_node_from_slot(slot).name)

    def _load_scripts(self, conn: Any) -> None:
        """Load the scripts on a new connection to a cluster's master (nothing else is in
        flight on it), flagged as connect() does on Redis 7 (a cluster node is 7 or
        newer, or else takes them unflagged)."""
        for name, source in SCRIPTS.items():
            for text in (_SHEBANG + source, source):
                load: tuple[Any, ...] = (b"SCRIPT", b"LOAD", text)
                conn.send_packed_command([hiredis.pack_command(load)])
                try:
                    self._sha[name] = conn.read_response(disable_decoding=True).decode()
                    break
                except redis.ResponseError:
                    if text == source:
                        raise

    def _read_until(self, reply: Reply[Any]) -> None:
        while not reply._done:
            if not self._pending:
                raise StoreError(f"{reply.action}: the connection was lost before the reply")
            conn, oldest = self._pending[0]
            try:
                value = conn.read_response(disable_decoding=True)
            except redis.ResponseError as exc:
                value = exc
            except redis.RedisError as exc:
                self._broken()
                raise converted(exc, oldest.action) from None
            self._pending.popleft()
            if (
                self._on_cluster
                and isinstance(value, redis.ResponseError)
                and is_transient_reply(value)
            ):
                self._broken()
                oldest._receive(value, unavailable=True)
                return
            oldest._receive(value)

    def _broken(self) -> None:
        """After a connection error nothing in flight can be trusted: drop it all."""
        self._pending.clear()
        if self._conn is not None:
            self._conn.disconnect()
        if self._cluster is not None:
            for pool, conn in self._conns.values():
                conn.disconnect()
                with suppress(Exception):  # a pool closed meanwhile: nothing to give back
                    pool.release(conn)
            self._conns.clear()
            self._stale = True

    def _call(self, args: tuple[Any, ...], action: str, convert: Callable[[Any], T]) -> T:
        return self._send(args, action, convert).get()

    def connect(self) -> None:
        """A fresh connection: check the server, load the scripts. StoreError when Redis
        is unreachable."""
        self._broken()
        action = f"connecting to {self.display_url}"
        if self._on_cluster:
            with converted_errors(action):
                if self._cluster is None:
                    self._cluster = cluster_client(self.url, **self._options)
                else:
                    self._cluster.nodes_manager.initialize()
            self._stale = False
            return
        info = self._call((b"INFO", b"server"), action, bytes)
        if self._own_pool and self._pool is not None:
            cluster_info = self._call((b"INFO", b"cluster"), action, bytes)
            if b"cluster_enabled:1" in cluster_info:
                # A cluster node's URL: the cluster it belongs to, from now on.
                self._broken()
                self._conn = None
                self._pool.disconnect()
                self._pool = None
                self._on_cluster = True
                self._sha = _CLUSTER_SHA.copy()
                with converted_errors(action):
                    self._cluster = cluster_client(self.url, **self._options)
                self._stale = False
                return
        found = re.search(rb"redis_version:(\d+)\.(\d+)", info)
        version = (int(found[1]), int(found[2])) if found else (0, 0)
        self._has_lmove = version >= (6, 2)
        # Redis 7 refuses a script flagged by a shebang when it is out of memory, before
        # it runs, instead of failing at its first write.
        shebang = "#!lua\n" if version >= (7, 0) else ""
        for name, source in SCRIPTS.items():
            self._sha[name] = self._call(
                (b"SCRIPT", b"LOAD", shebang + source), action, lambda sha: sha.decode()
            )

    def _script(self, name: str, keys: Sequence[Any], args: Sequence[Any]) -> tuple[Any, ...]:
        return (b"EVALSHA", self._sha[name], len(keys), *keys, *args)

    # --- commands -----------------------------------------------------------------

    def recover(
        self,
        input_queue: str,
        taken_list: str,
        failed_queue: str,
        max_attempts: int,
        *,
        attempts_of: str | None = None,
        liveness: str = "",
        registry: str = "",
        leaving: str = "",
        only_if_dead: bool = False,
        dead_value: str = "",
    ) -> Recovered | None:
        """Move every event of the taken list back to the input queue, to be taken first.

        With max_attempts > 0 the move counts as an interruption of each event that was
        being processed (not of those taken ahead; each text once), and an event
        interrupted that often goes to the failed queue instead. `attempts_of` is the
        watcher's taken queue, which names the attempts hash (default: `taken_list`).

        `liveness` is the list holder's heartbeat (or an older resc's owner key):
        with `only_if_dead`, nothing is done while it exists (unless it holds
        `dead_value`, a holder known to be dead), and None is returned.
        `leaving`: the holder's id, deleted with its heartbeat from `registry`. A key
        of the wrong type: StoreError, and nothing moved."""
        keys = (
            input_queue,
            taken_list,
            attempts(attempts_of or taken_list),
            failed_queue,
            failed_reasons(failed_queue),
            taken_ahead(taken_list),
            liveness or taken_owner(taken_list),
            registry or f"{taken_list}/instances",
            outbox(taken_list),
            orphaned_outbox(attempts_of or taken_list),
        )
        args = (max_attempts, leaving, "1" if only_if_dead else "0", dead_value)
        command = self._script("recover", keys, args)
        back, failed, interrupted, entries = self._call(command, f"recovering {taken_list}", list)
        if int(back) < 0:
            return None
        return Recovered(int(back), int(failed), int(interrupted), int(entries))

    def replay_one(self, failed_queue: str, input_queue: str) -> bytes | None:
        """Move the oldest failed event back to the input queue, with the oldest record of
        its text; None when there is none."""
        keys = (failed_queue, input_queue, failed_reasons(failed_queue))
        command = self._script("replay", keys, ())
        return self._call(command, f"replaying {failed_queue}", _event_or_none)

    def failed_events(
        self, failed_queue: str, most: int
    ) -> tuple[int, list[tuple[bytes, FailedRecord | None]]]:
        """How many events the failed queue holds, and up to `most` of them, oldest
        first, each with the record of its copy (None when there is none)."""
        action = f"reading {failed_queue}"
        length = self._send((b"LLEN", failed_queue), action, int)
        events = self._call((b"LRANGE", failed_queue, -most, -1), action, list)[::-1]
        if not events:
            return length.get(), []
        values = self._call((b"HMGET", failed_reasons(failed_queue), *events), action, list)
        records = {event: decode(value) for event, value in zip(events, values, strict=True)}
        # The oldest copies of a text, in the failed list, have its oldest records.
        # The list is read from its oldest end, so copies beyond `most` are newer.
        seen: dict[bytes, int] = {}
        listed: list[tuple[bytes, FailedRecord | None]] = []
        for event in events:
            n = seen.get(event, 0)
            seen[event] = n + 1
            mine = records[event]
            listed.append((event, mine[n] if n < len(mine) else None))
        return length.get(), listed

    def heartbeat(
        self,
        heartbeat: str,
        registry: str,
        taken_list: str,
        instance: str,
        value: str,
        ttl_ms: int,
        join: bool,
        dead_value: str = "",
    ) -> tuple[str, int] | bool:
        """Join (register with a heartbeat) or refresh the heartbeat. True when done;
        False when refreshing an expired heartbeat (nothing refreshed, the id registered
        again); (value, its time to live in ms) when another process holds it."""
        keys = (heartbeat, registry, taken_list)
        command = self._script(
            "heartbeat", keys, (instance, ttl_ms, value, "join" if join else "beat", dead_value)
        )

        def done(reply: Any) -> tuple[str, int] | bool:
            if isinstance(reply, list):
                return reply[0].decode("utf-8", "replace"), int(reply[1])
            return int(reply) == 0

        return self._call(command, f"refreshing {heartbeat}", done)

    def members(self, registry: str) -> list[str]:
        """The instance ids registered in `registry`."""
        ids = self._call((b"SMEMBERS", registry), f"reading {registry}", list)
        return sorted(i.decode("utf-8", "replace") for i in ids)

    def values(self, keys: Sequence[str]) -> list[str | None]:
        """The value of each string key (None when it does not exist), in one round trip.
        A key of another type: StoreError."""

        def text(reply: Any) -> str | None:
            return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else None

        replies = [self._send((b"GET", k), f"reading {k}", text) for k in keys]
        return [reply.get() for reply in replies]

    def lengths(self, queues: Sequence[str]) -> list[int]:
        """LLEN of each queue, in one round trip."""
        replies = [self._send((b"LLEN", q), f"reading {q}", int) for q in queues]
        return [reply.get() for reply in replies]

    def send_take(
        self,
        input_queue: str,
        taken_list: str,
        most: int,
        heartbeat: str = "",
        *,
        ahead: bool = True,
    ) -> Reply[list[bytes]]:
        """Move up to `most` waiting events to the taken list, oldest first, marked as
        taken ahead (the events taken before them are being processed; `ahead` False:
        they are processed at once, and all are counted as interrupted by a crash); no
        wait. With a `heartbeat` that has expired: HeartbeatLost, and nothing taken."""
        keys = (input_queue, taken_list, taken_ahead(taken_list), *([heartbeat] * bool(heartbeat)))
        command = self._script("take", keys, (most,) if ahead else (most, "now"))

        def taken(reply: Any) -> list[bytes]:
            if not isinstance(reply, list):
                raise HeartbeatLost(f"{heartbeat} has expired: nothing taken into {taken_list}")
            return reply

        return self._send(command, f"taking from {input_queue}", taken)

    def take(
        self, input_queue: str, taken_list: str, most: int, heartbeat: str = ""
    ) -> list[bytes]:
        return self.send_take(input_queue, taken_list, most, heartbeat).get()

    def wait_take(self, input_queue: str, taken_queue: str) -> bytes | None:
        """Wait up to BLOCK_TIMEOUT_S for one event and move it to the taken queue."""
        timeout = str(BLOCK_TIMEOUT_S).encode()
        if self._has_lmove:
            command: tuple[Any, ...] = (
                b"BLMOVE",
                input_queue,
                taken_queue,
                b"RIGHT",
                b"LEFT",
                timeout,
            )
        else:
            command = (b"BRPOPLPUSH", input_queue, taken_queue, timeout)
        return self._call(command, f"taking from {input_queue}", _event_or_none)

    def send_commit(
        self,
        taken_list: str,
        failed_queue: str,
        outcomes: Sequence[Outcome],
        listener: Listener | None,
        taken_queue: str = "",
        *,
        input_queue: str,
    ) -> Reply[CommitReport]:
        """Commit a batch atomically: each event's tasks pushed (deduplicated through its
        set; a task with a due time in the future into its queue's delayed tasks) and
        the event removed from the taken list, or the event moved to the failed queue.
        A key of the wrong type fails the events that use it. `taken_queue`: the
        watcher's (default `taken_list`), which names the attempts hash and is named in
        the listener's messages; `input_queue` names the watcher's set of queues with
        delayed tasks."""
        queues = _queues(taken_list, taken_queue or taken_list, failed_queue, input_queue)
        return self._send_commit(queues, outcomes, listener, {})

    def commit(
        self,
        taken_list: str,
        failed_queue: str,
        outcomes: Sequence[Outcome],
        listener: Listener | None,
        taken_queue: str = "",
        *,
        input_queue: str,
    ) -> CommitReport:
        return self.send_commit(
            taken_list, failed_queue, outcomes, listener, taken_queue, input_queue=input_queue
        ).get()

    def _send_commit(
        self,
        queues: _Queues,
        outcomes: Sequence[Outcome],
        listener: Listener | None,
        failures: dict[int, str],
    ) -> Reply[CommitReport]:
        home = slot_of(queues.taken_list) if self._on_cluster else None
        batch = f"{self._writer}-{next(self._batches)}" if home is not None else ""
        keys, args, elsewhere = _commit_arguments(queues, outcomes, failures, listener, home, batch)

        def report(status: bytes) -> CommitReport:
            text = status.decode()
            if not text.startswith("!"):
                committed = _report(text, failures)
                if not any(committed.status[i] == "c" for i in elsewhere):
                    return committed
                items = [
                    outboxes.Item(i, k, outcomes[i].event, outcomes[i].results[k])
                    for i, ks in elsewhere.items()
                    if committed.status[i] == "c"
                    for k in ks
                ]
                applied, failed = self._apply_elsewhere(
                    batch, items, listener, queues, outbox(queues.taken_list), own=True
                )
                return _merged(committed, outcomes, elsewhere, applied, failed)
            # A key holds the wrong type and nothing was written: fail the events that
            # use it, and commit again.
            index, _, actual = text[1:].partition(":")
            key = keys[int(index) - 1]
            name = key.decode(errors="replace")
            if int(index) <= _OWN_KEYS:
                raise StoreError(f"{name} holds a {actual}, where resc keeps its own list/hash/set")
            for i, outcome in enumerate(outcomes):
                if (
                    i not in failures
                    and outcome.failure is None
                    and any(key in _keys_of(r) for r in outcome.results)
                ):
                    failures[i] = f"key {name} holds a {actual}"
            return self._send_commit(queues, outcomes, listener, failures).get()

        command = self._script("commit", keys, args)
        return self._send(command, f"committing to {queues.taken_list}", report)

    def _apply_elsewhere(
        self,
        batch: str,
        items: Sequence[outboxes.Item],
        listener: Listener | None,
        queues: _Queues,
        entry_outbox: str,
        *,
        own: bool,
    ) -> tuple[dict[tuple[int, int], str], dict[int, str]]:
        """Steps 2 to 4 of the outbox (resc.engine.outbox) for one entry: apply its items
        in their slots, all sent before any reply is read, then remove the entry from
        `entry_outbox`; with `own` (the writer, which has seen every reply) delete the
        markers. Returns each item's status by (number, position): 'p' (pushed), 'd'
        (already in its set) or '!' (a key of the wrong type), in capitals when it was
        applied before (a replay), and the reasons of the events that failed."""
        talk = (
            int(time.time()),
            outboxes.MARKER_TTL_MS,
            *_listener_args(listener, queues.taken_queue),
        )
        sent = []
        for slot, group in outboxes.by_slot(items).items():
            keys, args = _apply_arguments(batch, group, talk)
            command = self._script("apply", keys, args)
            reply = self._send(command, f"committing to slot {slot} of the cluster", bytes)
            sent.append((slot, group, reply))
        acks = []
        if self.wait_replicas:
            # One WAIT per master: it covers every write sent before it on the connection.
            masters = {self._master_of(slot): group[0].result.queue for slot, group, _ in sent}
            for queue in masters.values():
                wait = (b"WAIT", self.wait_replicas, _WAIT_MS)
                acks.append(self._send(wait, "waiting for replicas", int, route=queue))
        statuses: dict[tuple[int, int], str] = {}
        failed: dict[int, str] = {}
        for _, group, reply in sent:
            letters, _, why = reply.get().partition(b"\n")
            # '=': applied before this replay, nothing pushed now. Its failures are still
            # recorded by the run that removes the entry.
            before = letters.startswith(b"=")
            letters = letters.removeprefix(b"=")
            reasons = iter(why.decode("utf-8", "replace").split("\n"))
            for item, letter in zip(group, letters.decode(), strict=True):
                statuses[item.number, item.position] = letter.upper() if before else letter
                if letter == "!":
                    reason = f"key {next(reasons)}: its task was not pushed"
                    failed.setdefault(item.number, reason)
        short = sum(ack.get() < self.wait_replicas for ack in acks)
        if short:
            log.warning(
                "fewer replicas than redis.wait_replicas acknowledged a commit's tasks for "
                "other slots within 1 s: a failover of their master now may lose them",
                masters=short,
                wanted=self.wait_replicas,
            )
        events = {item.number: item.event for item in items}
        pairs = [field for i, why in failed.items() for field in (events[i], why)]
        done = self._script(
            "outbox_done",
            (entry_outbox, queues.failed, failed_reasons(queues.failed)),
            (batch, *pairs),
        )
        removed = self._call(done, f"committing to {entry_outbox}", int)
        if own and removed:
            for _, group, _ in sent:
                forget = (b"DEL", outboxes.marker(group[0].result.queue, batch))
                self._send(forget, "forgetting a marker", int)
        return statuses, failed

    def replay_outbox(
        self,
        entry_outbox: str,
        failed_queue: str,
        listener: Listener | None,
        taken_queue: str,
    ) -> Replayed:
        """Apply the entries left in an outbox (by a process killed between its commits'
        steps: see resc.engine.outbox), oldest first; each push is done once, however
        many instances replay the same entry. An entry that cannot be read is kept and
        reported (StoreError): it is never dropped silently."""
        action = f"reading {entry_outbox}"
        fields = self._call((b"HGETALL", entry_outbox), action, _pairs)
        queues = _Queues(taken_queue, taken_queue, failed_queue, "")
        entries = pushed = deduplicated = failed = 0
        pairs = sorted(fields, key=lambda p: outboxes.batch_order(p[0]))
        for batch, value in pairs:
            try:
                items = outboxes.decode(value)
            except (ValueError, StopIteration, UnicodeDecodeError) as exc:
                raise StoreError(
                    f"{entry_outbox} field {batch.decode(errors='replace')} is not an "
                    f"outbox entry ({exc}): it is left there"
                ) from None
            statuses, failures = self._apply_elsewhere(
                batch.decode(), items, listener, queues, entry_outbox, own=False
            )
            entries += 1
            letters = "".join(statuses.values())
            pushed += letters.count("p")
            deduplicated += letters.count("d")
            failed += len(failures)
        return Replayed(entries, pushed, deduplicated, failed)


class _Queues(NamedTuple):
    """A watcher's own keys that a commit writes: the taken list it removes its events
    from, the watcher's taken queue (whose attempts hash it updates), its failed queue and
    its set of queues with delayed tasks."""

    taken_list: str
    taken_queue: str
    failed: str
    delayed_queues: str


@functools.lru_cache(maxsize=256)
def _queues(taken_list: str, taken_queue: str, failed_queue: str, input_queue: str) -> _Queues:
    """A watcher's _Queues, made once: a commit's names are the same for all of its
    batches."""
    return _Queues(taken_list, taken_queue, failed_queue, delayed_queues(input_queue))


# KEYS[1.._OWN_KEYS] of commit.lua are the watcher's own.
_OWN_KEYS = 6
_DELAYED, _DELAYED_COUNTER = DELAYED.encode(), DELAYED_COUNTER.encode()


def _keys_of(result: Result) -> tuple[bytes | None, ...]:
    """The keys a result's commit writes."""
    if result.due is None:
        return result.queue, result.set
    return result.queue, result.set, result.queue + _DELAYED, result.queue + _DELAYED_COUNTER


@functools.lru_cache(maxsize=256)
def _own_keys(queues: _Queues) -> tuple[tuple[bytes, ...], frozenset[bytes]]:
    """KEYS[1.._OWN_KEYS] of commit.lua, and every key of the watcher's own (also those
    that only recover.lua, take.lua and the instances' logic write), which no result
    may write: the same for every commit of a watcher's instance."""
    taken_list, taken_queue, failed_queue = queues.taken_list, queues.taken_queue, queues.failed
    keys = (
        taken_list.encode(),
        failed_queue.encode(),
        failed_reasons(failed_queue).encode(),
        attempts(taken_queue).encode(),
        queues.delayed_queues.encode(),
        outbox(taken_list).encode(),
    )
    others = (
        taken_queue,
        taken_ahead(taken_list),
        taken_ahead(taken_queue),
        taken_owner(taken_queue),
        instances(taken_queue),
        orphaned_outbox(taken_queue),
        f"{taken_list}/heartbeat",
    )
    return keys, frozenset((*keys, *(key.encode() for key in others)))


def _commit_arguments(
    queues: _Queues,
    outcomes: Sequence[Outcome],
    failures: dict[int, str],
    listener: Listener | None,
    home: int | None = None,
    batch: str = "",
) -> tuple[list[bytes], list[Any], dict[int, list[int]]]:
    """KEYS and ARGV of commit.lua (see its header), and per event that has results in
    slots other than `home` (the watcher's slot on a Redis Cluster; None: one server)
    the indexes of those results, which ARGV carries encoded for the outbox. Records a
    failure for an event that would use one key in two roles (a queue and a set, say),
    or write into the watcher's own keys, or (on a cluster) a set outside its queue's
    slot or a delayed task outside the watcher's slot. A result due by now is pushed
    now."""
    taken_queue = queues.taken_queue
    own_keys, own = _own_keys(queues)
    keys = list(own_keys)
    roles: dict[bytes, tuple[str, int]] = {}
    now = time.time()
    args: list[Any] = [int(now), *_listener_args(listener, taken_queue), batch]
    with_rule = listener is not None and listener.json
    elsewhere: dict[int, list[int]] = {}
    for i, (event, results, failure) in enumerate(outcomes):
        if failures and i in failures:
            failure = failures[i]
        if failure is None:
            record: list[Any] = [event, 0]
            remote: list[int] = []
            try:
                for k, (task, queue, dedup, rule, make, due) in enumerate(results):
                    delayed = due is not None and due > now
                    if home is not None and _elsewhere(home, queue, dedup, delayed):
                        _role(queue, "todo queue", roles, own)
                        roles.setdefault(queue, ("todo queue", 0))
                        if dedup is not None:
                            _role(dedup, "set", roles, own)
                            roles.setdefault(dedup, ("set", 0))
                        remote.append(k)
                        continue
                    q = _index(queue, "todo queue", roles, own, keys)
                    s = 0 if dedup is None else _index(dedup, "set", roles, own, keys)
                    d, due_ms = 0, 0
                    if delayed:
                        assert due is not None
                        d = _index(queue + _DELAYED, "delayed tasks' set", roles, own, keys)
                        _index(queue + _DELAYED_COUNTER, "delayed tasks' counter", roles, own, keys)
                        due_ms = int(due * 1000)
                    record += (task, q, s, d, due_ms)
                    if with_rule:
                        record += (rule, make or "")
            except _KeyConflict as exc:
                failure = str(exc)
            if failure is None:
                record[1] = len(results) - len(remote)
                if remote:
                    elsewhere[i] = remote
                    record.append(outboxes.encode(event, [results[k] for k in remote]))
                else:
                    record.append(b"")
                args += record
                continue
            failures[i] = failure
        args += (event, -1, failure)
    return keys, args, elsewhere


def _listener_args(listener: Listener | None, taken_queue: str) -> tuple[str, ...]:
    """The listener's ARGV of commit.lua and apply.lua: channel ('' for none), format,
    the watcher's name, and its taken queue as messages name it."""
    if listener is None:
        return ("", "text", "", taken_queue)
    return (listener.channel, "json" if listener.json else "text", listener.watcher, taken_queue)


def _apply_arguments(
    batch: str, group: Sequence[outboxes.Item], talk: tuple[Any, ...]
) -> tuple[list[bytes], list[Any]]:
    """KEYS and ARGV of apply.lua (see its header) for one slot's items; `talk`: its
    ARGV before the records."""
    keys = [outboxes.marker(group[0].result.queue, batch)]
    index: dict[bytes, int] = {}

    def at(key: bytes) -> int:
        if key not in index:
            keys.append(key)
            index[key] = len(keys)
        return index[key]

    args: list[Any] = list(talk)
    for event, result in ((item.event, item.result) for item in group):
        dedup = 0 if result.set is None else at(result.set)
        args += (event, result.task, at(result.queue), dedup, result.rule, result.make or "")
    return keys, args


# A commit on a cluster asks the slot of every result's queue and set: the names repeat.
_slot_of_name = functools.lru_cache(maxsize=4096)(slot_of)


def _elsewhere(home: int, queue: bytes, dedup: bytes | None, delayed: bool) -> bool:
    """Whether a result goes to a slot other than `home` (through the outbox);
    _KeyConflict when it cannot be committed on a cluster at all."""
    slot = _slot_of_name(queue)
    if dedup is not None and _slot_of_name(dedup) != slot:
        raise _KeyConflict(
            f"set {dedup.decode('utf-8', 'replace')} and queue "
            f"{queue.decode('utf-8', 'replace')} are in two slots of the cluster: the dedup "
            "test and the push are one script, so they must share a hash tag"
        )
    if slot == home:
        return False
    if delayed:
        raise _KeyConflict(
            f"queue {queue.decode('utf-8', 'replace')} is not in the watcher's slot: on a "
            "Redis Cluster a delayed task's queue must share its input queue's hash tag"
        )
    return True


def _first_key(args: tuple[Any, ...]) -> Any:
    """The first key a command names (which routes it on a cluster), or None."""
    if args[0] == b"EVALSHA":
        return args[3] if int(args[2]) else None
    if args[0] in (b"INFO", b"SCRIPT"):
        return None
    return args[1] if len(args) > 1 else None


def _pairs(reply: Any) -> list[tuple[bytes, bytes]]:
    """A hash's fields and values (HGETALL), as a flat list or a map (RESP3)."""
    if isinstance(reply, dict):
        return list(reply.items())
    return list(zip(reply[::2], reply[1::2], strict=True))


def _event_or_none(reply: Any) -> bytes | None:
    return reply if isinstance(reply, bytes) else None


class _KeyConflict(Exception):
    """An event would use a key in two roles: the message is its reason to fail."""


def _index(
    key: bytes,
    role: str,
    roles: dict[bytes, tuple[str, int]],
    own: frozenset[bytes],
    keys: list[bytes],
) -> int:
    """The index in KEYS of `key` in `role` ("todo queue", "set", ...), added when new;
    _KeyConflict when it is one of the watcher's own keys or already has another role."""
    known = _role(key, role, roles, own)
    if known:
        return known
    keys.append(key)
    roles[key] = (role, len(keys))
    return len(keys)


def _role(key: bytes, role: str, roles: dict[bytes, tuple[str, int]], own: frozenset[bytes]) -> int:
    """The index in KEYS that `key` has in `role`, 0 when it has none yet (a key of
    another slot is recorded with 0); _KeyConflict as _index() says."""
    known = roles.get(key)
    if known is not None:
        if known[0] != role:
            name = key.decode("utf-8", "replace")
            raise _KeyConflict(f"{name} would be used both as a {known[0]} and as a {role}")
        return known[1]
    if key in own:
        name = key.decode("utf-8", "replace")
        raise _KeyConflict(f"{name} is one of the watcher's own keys, not a {role}")
    return 0


def _merged(
    committed: CommitReport,
    outcomes: Sequence[Outcome],
    elsewhere: dict[int, list[int]],
    applied: dict[tuple[int, int], str],
    failed: dict[int, str],
) -> CommitReport:
    """A commit's report with what its results in other slots did: an event of which
    one could not be pushed is reported failed."""
    status = list(committed.status)
    pushed = committed.pushed
    failures = dict(committed.failures)
    for i, positions in elsewhere.items():
        if status[i] != "c":
            continue
        local = iter(pushed[i])
        pushed[i] = [
            applied.get((i, k)) == "p" if k in positions else next(local)
            for k in range(len(outcomes[i].results))
        ]
        if i in failed:
            status[i] = "f"
            failures[i] = failed[i]
    return CommitReport("".join(status), pushed, failures)


def _report(status: str, failures: dict[int, str]) -> CommitReport:
    pushed: list[list[bool]] = []
    events = ""
    for letter in status:
        if letter in "cfm":
            events += letter
            pushed.append([])
        else:
            pushed[-1].append(letter == "p")
    return CommitReport(events, pushed, failures)
