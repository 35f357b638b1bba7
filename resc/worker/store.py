"""The Redis side of a worker: key names, the take, and the Lua scripts of resc/worker/lua.

Every command is sent without client retries: a re-sent BLMOVE whose reply was lost
would strand a second task in the taken list, a re-sent notice would notify twice. The
worker re-reads its taken list after a lost connection instead (see worker.py).

On a Redis Cluster (a cluster URL, or a server URL of a cluster node) a worker's own keys
(its queue, taken list, heartbeat, the queue's registry, set and failed list) must share
the queue's slot, as the names derived from a hash-tagged queue do; connect() refuses
others. A done queue in another slot is notified in two steps (Calls.notice, then the
done script without the push): at least once, where one script is exactly once.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.retry import Retry

from resc.config.redis_url import is_cluster_url
from resc.connection import clients
from resc.connection.edge import converted_errors, redact_url
from resc.core.errors import StoreError
from resc.core.keys import failed_reasons, worker_heartbeat, worker_taken_list
from resc.core.slots import same_slot, slot_of, tagged

_SCRIPTS = ("done", "fail", "release", "reap", "join")
_LUA = {
    name: (files("resc.worker") / "lua" / f"{name}.lua").read_text("utf-8") for name in _SCRIPTS
}

_GLOB_SPECIAL = re.compile(r"[*?\[\]\\]")

# A blocking take waits this long, so that a stop request is seen promptly.
TAKE_BLOCK_S = 1.0


@dataclass(frozen=True, slots=True)
class WorkerKeys:
    """Every key one worker uses. `heartbeat` is None in compatible mode (a fixed taken
    list shared with other workers, no heartbeat, no reaper)."""

    queue: str
    taken: str
    heartbeat: str | None
    workers: str
    set: str | None
    done_queue: str | None
    failed: str

    @property
    def failed_reasons(self) -> str:
        return failed_reasons(self.failed)

    def own_keys(self) -> list[str]:
        """The keys the worker's scripts use together, which on a cluster must share the
        queue's slot (the done queue need not)."""
        own = [self.queue, self.taken, self.workers, self.failed, self.failed_reasons]
        if self.heartbeat is not None:
            own.append(self.heartbeat)
        if self.set is not None:
            own.append(self.set)
        return own

    def notice_apart(self) -> bool:
        """Whether the done queue is in another slot than the taken list: on a cluster,
        the notice is then pushed before, and apart from, the task's removal."""
        return self.done_queue is not None and not same_slot(self.taken, self.done_queue)


def cluster_refusal(keys: WorkerKeys) -> str | None:
    """Why the worker's keys cannot be used on a Redis Cluster (keys of its scripts in
    other slots than its queue), saying what to write instead; None when they can."""
    apart = [key for key in keys.own_keys() if slot_of(key) != slot_of(keys.queue)]
    if not apart:
        return None
    shown = ", ".join(apart)
    return (
        f"on a Redis Cluster a worker's keys must share its queue's slot, and {shown} "
        f"do not share the slot of {keys.queue}: give the queue a hash tag, as in "
        f"{tagged(keys.queue)!r}, and its set and failed list the same tag"
    )


@dataclass(frozen=True, slots=True)
class Call:
    """One script call: which script, its KEYS and ARGV, and what it does (for errors)."""

    script: str
    keys: list[str]
    args: list[bytes | str | int]
    action: str


class Calls:
    """The script calls of one worker, shared by the threaded and the asyncio store."""

    def __init__(self, keys: WorkerKeys) -> None:
        self.keys = keys

    def done(self, task: bytes, zrem: bool, notify: bool = True) -> Call:
        """Notify and remove from the taken list atomically; 0 when the task was no
        longer there (nothing done). Without `notify`, only the removal (the notice was
        pushed apart, on a cluster)."""
        k = self.keys
        keys = [k.taken]
        notify = notify and k.done_queue is not None
        if notify:
            keys.append(k.done_queue)  # type: ignore[arg-type]
        zrem = zrem and k.set is not None
        if zrem:
            keys.append(k.set)  # type: ignore[arg-type]
        args: list[bytes | str | int] = [task, "1" if notify else "0", "1" if zrem else "0"]
        action = f"notifying {k.done_queue}" if notify else "finishing a task"
        return Call("done", keys, args, action)

    def fail(self, task: bytes, reason: str, attempts: int, zrem: bool) -> Call:
        """Move the task to the failed list with its record (and out of the set when
        `zrem`: the entry was kept while the task ran); 0 when it was no longer in the
        taken list."""
        k = self.keys
        keys = [k.taken, k.failed, k.failed_reasons]
        zrem = zrem and k.set is not None
        if zrem:
            keys.append(k.set)  # type: ignore[arg-type]
        args: list[bytes | str | int] = [
            task,
            reason,
            "1" if zrem else "0",
            f"{time.time():.6f}",
            attempts,
        ]
        return Call("fail", keys, args, f"moving a task to {k.failed}")

    def release(self, task: bytes) -> Call:
        """Give the task back to the queue, to be taken next (unless the queue holds it
        already and the set says so); 0 when it was no longer in the taken list."""
        keys, args = self._with_set([self.keys.taken, self.keys.queue], [task])
        return Call("release", keys, args, f"giving a task back to {self.keys.queue}")

    def join(self, worker_id: str, heartbeat_ttl_ms: int, holder: str) -> Call:
        """Claim the worker id and put back what a previous run under it left taken;
        -1 when the id's heartbeat is alive."""
        k = self.keys
        assert k.heartbeat is not None
        keys, args = self._with_set(
            [k.queue, k.taken, k.heartbeat, k.workers], [worker_id, heartbeat_ttl_ms, holder]
        )
        return Call("join", keys, args, f"registering worker {worker_id}")

    def reap(self, worker_id: str, leaving: bool = False) -> Call:
        """Put the tasks of a worker whose heartbeat has expired (or of this worker,
        `leaving`) back into the queue; -1 when that worker is alive."""
        q = self.keys.queue
        keys = [
            q,
            worker_taken_list(q, worker_id),
            worker_heartbeat(q, worker_id),
            self.keys.workers,
        ]
        keys, args = self._with_set(keys, [worker_id, "1" if leaving else "0"])
        return Call("reap", keys, args, f"re-queuing the tasks of worker {worker_id}")

    def _with_set(
        self, keys: list[str], args: list[bytes | str | int]
    ) -> tuple[list[str], list[bytes | str | int]]:
        """The keys and arguments of a script that puts tasks back into the queue, with
        the set: its entries are added back (with the current time as score, as resc
        does), so that resc does not queue a task that is already there."""
        if self.keys.set is None:
            return keys, [*args, "0", "0"]
        return [*keys, self.keys.set], [*args, "1", f"{time.time():.6f}"]

    def taken_prefix(self) -> str:
        return worker_taken_list(self.keys.queue, "")

    def taken_pattern(self) -> str:
        """SCAN's MATCH for the queue's taken lists, the queue name taken literally."""
        return _GLOB_SPECIAL.sub(r"\\\g<0>", self.taken_prefix()) + "*"

    def worker_ids_of(self, found: list[bytes | str]) -> list[str]:
        prefix = self.taken_prefix()
        ids = []
        for key in found:
            try:
                text = key if isinstance(key, str) else key.decode("utf-8")
            except UnicodeDecodeError:
                continue  # not a worker's: ids are text
            ids.append(text.removeprefix(prefix))
        return ids


def server_version(info: dict[str, object]) -> tuple[int, ...]:
    return tuple(int(p) for p in str(info.get("redis_version", "0")).split(".")[:2])


def script_sources(version: tuple[int, ...]) -> dict[str, str]:
    # Redis 7 refuses a script flagged by a shebang when it is out of memory, before it
    # runs, instead of failing at its first write.
    shebang = "#!lua\n" if version >= (7, 0) else ""
    return {name: shebang + source for name, source in _LUA.items()}


@dataclass(slots=True)
class Notice:
    """How far the notice of one task has gone when it is pushed apart from the task's
    removal (a done queue in another slot): once pushed, a retry only removes."""

    pushed: bool = False


class WorkerStore:
    """The Redis connections of one worker (a pool: its threads share it): its own, from
    `url` (a RedisCluster when the URL names a cluster, known at connect()), or a given
    client's (see `check_client`)."""

    def __init__(
        self,
        keys: WorkerKeys,
        client_name: str,
        url: str | None = None,
        client: redis.Redis | None = None,
    ) -> None:
        self.keys = keys
        self.calls = Calls(keys)
        self._owned = client is None
        self._url = url
        self._options: dict[str, Any] = {
            "socket_timeout": TAKE_BLOCK_S + 10,
            "socket_connect_timeout": 5,
            "retry": Retry(NoBackoff(), 0),
            # Redis refuses client names with spaces.
            "client_name": client_name.replace(" ", "_"),
        }
        self._redis: redis.Redis | RedisCluster | None = None
        if client is None:
            assert url is not None
            self.display_url = redact_url(url)
            # A RedisCluster connects as it is made: at connect().
            if not is_cluster_url(url):
                self._redis = clients.client(url, **self._options)
        else:
            self.display_url = describe(client.get_connection_kwargs())
            self._redis = client
        self._has_lmove = True
        self._notice_apart = False
        self._scripts: dict[str, Script] = {}

    @property
    def on_cluster(self) -> bool:
        return isinstance(self._redis, RedisCluster)

    @property
    def _client(self) -> redis.Redis | RedisCluster:
        if self._redis is None:
            raise StoreError(f"not connected to {self.display_url} yet")
        return self._redis

    def close(self) -> None:
        """Close the connections, unless they are a given client's: its owner does."""
        if self._owned and self._redis is not None:
            self._redis.close()

    def connect(self) -> None:
        """Check the server (on a cluster, that the worker's keys share a slot) and
        register the scripts."""
        with converted_errors(f"connecting to {self.display_url}"):
            if self._redis is None:
                assert self._url is not None
                self._redis = clients.cluster_client(self._url, **self._options)
            elif isinstance(self._redis, redis.Redis) and self._redis.info("cluster").get(
                "cluster_enabled"
            ):
                if not self._owned:
                    raise StoreError(
                        f"{self.display_url} is a node of a Redis Cluster: give the worker "
                        "its URL rather than a client of one node"
                    )
                assert self._url is not None
                self._redis.close()
                self._redis = clients.cluster_client(self._url, **self._options)
            if isinstance(self._redis, RedisCluster):
                refusal = cluster_refusal(self.keys)
                if refusal is not None:
                    raise StoreError(refusal)
                self._notice_apart = self.keys.notice_apart()
                node = self._redis.get_node_from_key(self.keys.queue)  # type: ignore[no-untyped-call, unused-ignore]
                info = self._redis.info("server", target_nodes=node)
            else:
                info = self._redis.info("server")
            version = server_version(info)
            self._has_lmove = version >= (6, 2)
            self._scripts = {
                name: self._client.register_script(source)
                for name, source in script_sources(version).items()
            }

    def take(self) -> bytes | None:
        """Wait up to TAKE_BLOCK_S for a task and move it to the taken list."""
        k = self.keys
        with converted_errors(f"taking from {k.queue}"):
            if self._has_lmove:
                task = self._client.blmove(
                    k.queue,
                    k.taken,
                    TAKE_BLOCK_S,  # type: ignore[arg-type]  # Redis takes seconds as a float
                    "RIGHT",
                    "LEFT",
                )
            else:
                task = self._client.brpoplpush(k.queue, k.taken, TAKE_BLOCK_S)
            return task  # type: ignore[return-value]

    def zrem(self, task: bytes) -> None:
        assert self.keys.set is not None
        with converted_errors(f"removing a task from {self.keys.set}"):
            self._client.zrem(self.keys.set, task)

    def _run(self, call: Call) -> int:
        with converted_errors(call.action):
            return int(self._scripts[call.script](keys=call.keys, args=call.args))

    def done(self, task: bytes, zrem: bool, notice: Notice | None = None) -> bool:
        """See Calls.done. With the done queue in another slot of a cluster: the notice
        pushed first (unless `notice` says it was, by an earlier try), then the task
        removed; a crash between the two notifies again when the task is done again.
        False, with nothing pushed, when the task is no longer in the taken list."""
        if not self._notice_apart:
            return bool(self._run(self.calls.done(task, zrem)))
        k = self.keys
        notice = notice if notice is not None else Notice()
        if not notice.pushed:
            with converted_errors(f"reading {k.taken}"):
                if self._client.lpos(k.taken, task) is None:  # type: ignore[arg-type]
                    return False
            with converted_errors(f"notifying {k.done_queue}"):
                self._client.lpush(k.done_queue, task)  # type: ignore[arg-type]
            notice.pushed = True
        self._run(self.calls.done(task, zrem, notify=False))
        return True

    def fail(self, task: bytes, reason: str, attempts: int, zrem: bool) -> bool:
        """See Calls.fail."""
        return bool(self._run(self.calls.fail(task, reason, attempts, zrem)))

    def release(self, task: bytes) -> bool:
        """See Calls.release."""
        return bool(self._run(self.calls.release(task)))

    def join(self, worker_id: str, heartbeat_ttl_ms: int, holder: str) -> int:
        """See Calls.join."""
        return self._run(self.calls.join(worker_id, heartbeat_ttl_ms, holder))

    def reap(self, worker_id: str, leaving: bool = False) -> int:
        """See Calls.reap."""
        return self._run(self.calls.reap(worker_id, leaving))

    def taken_tasks(self) -> list[bytes]:
        with converted_errors(f"reading {self.keys.taken}"):
            tasks: list[bytes] = self._client.lrange(self.keys.taken, 0, -1)  # type: ignore[assignment]
            return tasks

    def beat(self, worker_id: str, heartbeat_ttl_ms: int, holder: str) -> tuple[bool, bool]:
        """Refresh the heartbeat and the registration: whether the heartbeat was still
        there, and whether the id was still registered, before."""
        k = self.keys
        assert k.heartbeat is not None
        with converted_errors("refreshing the heartbeat"):
            # One slot on a cluster (connect() checked): a transaction there too.
            pipe = self._client.pipeline(transaction=True)
            pipe.exists(k.heartbeat)
            pipe.sismember(k.workers, worker_id)
            pipe.set(k.heartbeat, holder, px=heartbeat_ttl_ms)
            pipe.sadd(k.workers, worker_id)
            alive, registered, _, _ = pipe.execute()
            return bool(alive), bool(registered)

    def scan_taken(self, cursor: int, count: int) -> tuple[int, list[str]]:
        """One SCAN step over the keys `<queue>/taken/*`: the next cursor (0: done) and
        the worker ids of the taken lists found, registered or not. On a cluster, on the
        master of the queue's slot, where they all are."""
        with converted_errors(f"looking for taken lists of {self.keys.queue}"):
            pattern = self.calls.taken_pattern()
            if isinstance(self._redis, RedisCluster):
                node = self._redis.get_node_from_key(self.keys.queue)  # type: ignore[no-untyped-call, unused-ignore]
                cursors, found = self._redis.scan(
                    cursor, match=pattern, count=count, target_nodes=node
                )
                # RedisCluster gives a cursor per node asked: here, one.
                next_cursor = next(iter(cursors.values()))  # type: ignore[attr-defined]
            else:
                next_cursor, found = self._client.scan(cursor, match=pattern, count=count)
        return int(next_cursor), self.calls.worker_ids_of(found)

    def worker_ids(self) -> list[str]:
        with converted_errors(f"reading {self.keys.workers}"):
            members = self._client.smembers(self.keys.workers)
            return sorted(m.decode("utf-8", "replace") for m in members)  # type: ignore[union-attr]


def check_client(kwargs: dict[str, Any]) -> None:
    """ValueError unless a given client (its connection settings) suits a worker: no
    retries (a re-sent take or notice duplicates it), a socket timeout above the blocking
    take's, bytes replies."""
    problems = []
    retry = kwargs.get("retry")
    if retry is not None and retry.get_retries() != 0:
        problems.append(
            f"it retries commands ({retry.get_retries()} times), which may re-send a take "
            "or a notice: give it retry=Retry(NoBackoff(), 0)"
        )
    timeout_s = kwargs.get("socket_timeout")
    if timeout_s is None or timeout_s <= TAKE_BLOCK_S:
        problems.append(
            f"its socket_timeout ({timeout_s}) must be more than {TAKE_BLOCK_S:g} s, the "
            "longest a take blocks (None would wait for ever on a frozen server)"
        )
    if kwargs.get("decode_responses"):
        problems.append("it decodes responses: tasks are bytes; use decode_responses=False")
    if problems:
        raise ValueError("the given Redis client does not suit a worker: " + "; ".join(problems))


def describe(kwargs: dict[str, Any]) -> str:
    """Where a given client connects, for messages."""
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"
