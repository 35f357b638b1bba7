"""The Redis side of a worker: key names, the take, and the Lua scripts of resc/worker/lua.

Every command is sent without client retries: a re-sent BLMOVE whose reply was lost
would strand a second task in the taken list, a re-sent notice would notify twice. The
worker re-reads its taken list after a lost connection instead (see worker.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files

import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.retry import Retry

from resc.connection.edge import converted_errors, redact_url
from resc.core.keys import failed_reasons, worker_heartbeat, worker_taken_list

_SCRIPTS = ("done", "fail", "release", "reap", "join")
_LUA = {
    name: (files("resc.worker") / "lua" / f"{name}.lua").read_text("utf-8") for name in _SCRIPTS
}

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


class WorkerStore:
    """The Redis connections of one worker (a pool: its threads share it)."""

    def __init__(self, url: str, keys: WorkerKeys, client_name: str) -> None:
        self.keys = keys
        self.display_url = redact_url(url)
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=TAKE_BLOCK_S + 10,
            socket_connect_timeout=5,
            retry=Retry(NoBackoff(), 0),
            # Redis refuses client names with spaces.
            client_name=client_name.replace(" ", "_"),
        )
        self._has_lmove = True
        self._scripts: dict[str, Script] = {}

    def close(self) -> None:
        self._redis.close()

    def connect(self) -> None:
        """Check the server and register the scripts."""
        with converted_errors(f"connecting to {self.display_url}"):
            info = self._redis.info("server")
            version = tuple(int(p) for p in str(info.get("redis_version", "0")).split(".")[:2])
            self._has_lmove = version >= (6, 2)
            # Redis 7 refuses a script flagged by a shebang when it is out of memory,
            # before it runs, instead of failing at its first write.
            shebang = "#!lua\n" if version >= (7, 0) else ""
            self._scripts = {
                name: self._redis.register_script(shebang + source) for name, source in _LUA.items()
            }

    def take(self) -> bytes | None:
        """Wait up to TAKE_BLOCK_S for a task and move it to the taken list."""
        k = self.keys
        with converted_errors(f"taking from {k.queue}"):
            if self._has_lmove:
                task = self._redis.blmove(
                    k.queue,
                    k.taken,
                    TAKE_BLOCK_S,  # type: ignore[arg-type]  # Redis takes seconds as a float
                    "RIGHT",
                    "LEFT",
                )
            else:
                task = self._redis.brpoplpush(k.queue, k.taken, TAKE_BLOCK_S)
            return task  # type: ignore[return-value]

    def zrem(self, task: bytes) -> None:
        assert self.keys.set is not None
        with converted_errors(f"removing a task from {self.keys.set}"):
            self._redis.zrem(self.keys.set, task)

    def done(self, task: bytes, zrem: bool) -> bool:
        """Notify and remove from the taken list atomically; False when the task was no
        longer there (nothing done)."""
        k = self.keys
        keys = [k.taken]
        if k.done_queue is not None:
            keys.append(k.done_queue)
        zrem = zrem and k.set is not None
        if zrem:
            keys.append(k.set)  # type: ignore[arg-type]
        args: list[bytes | str] = [
            task,
            "1" if k.done_queue is not None else "0",
            "1" if zrem else "0",
        ]
        with converted_errors(f"notifying {k.done_queue}" if k.done_queue else "finishing a task"):
            return bool(self._scripts["done"](keys=keys, args=args))

    def fail(self, task: bytes, reason: str) -> bool:
        """Move the task to the failed list with its reason (and out of the set);
        False when it was no longer in the taken list."""
        k = self.keys
        keys = [k.taken, k.failed, k.failed_reasons]
        if k.set is not None:
            keys.append(k.set)
        args: list[bytes | str] = [task, reason, "1" if k.set is not None else "0"]
        with converted_errors(f"moving a task to {k.failed}"):
            return bool(self._scripts["fail"](keys=keys, args=args))

    def release(self, task: bytes) -> bool:
        """Give the task back to the queue, to be taken next; False when it was no
        longer in the taken list."""
        with converted_errors(f"giving a task back to {self.keys.queue}"):
            return bool(
                self._scripts["release"](keys=[self.keys.taken, self.keys.queue], args=[task])
            )

    def taken_tasks(self) -> list[bytes]:
        with converted_errors(f"reading {self.keys.taken}"):
            tasks: list[bytes] = self._redis.lrange(self.keys.taken, 0, -1)  # type: ignore[assignment]
            return tasks

    def join(self, worker_id: str, heartbeat_ttl_ms: int, holder: str) -> int:
        """Claim the worker id and put back what a previous run under it left taken;
        -1 when the id's heartbeat is alive."""
        k = self.keys
        assert k.heartbeat is not None
        with converted_errors(f"registering worker {worker_id}"):
            return int(
                self._scripts["join"](
                    keys=[k.queue, k.taken, k.heartbeat, k.workers],
                    args=[worker_id, heartbeat_ttl_ms, holder],
                )
            )

    def beat(self, worker_id: str, heartbeat_ttl_ms: int, holder: str) -> bool:
        """Refresh the heartbeat; False when it had expired (a reaper may have put the
        tasks in hand back into the queue)."""
        k = self.keys
        assert k.heartbeat is not None
        with converted_errors("refreshing the heartbeat"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.exists(k.heartbeat)
            pipe.set(k.heartbeat, holder, px=heartbeat_ttl_ms)
            pipe.sadd(k.workers, worker_id)
            alive, _, _ = pipe.execute()
            return bool(alive)

    def reap(self, worker_id: str, leaving: bool = False) -> int:
        """Put the tasks of a worker whose heartbeat has expired (or of this worker,
        `leaving`) back into the queue; -1 when that worker is alive."""
        q = self.keys.queue
        keys = [
            q,
            worker_taken_list(q, worker_id),
            worker_heartbeat(q, worker_id),
            self.keys.workers,
        ]
        with converted_errors(f"re-queuing the tasks of worker {worker_id}"):
            return int(self._scripts["reap"](keys=keys, args=[worker_id, "1" if leaving else "0"]))

    def worker_ids(self) -> list[str]:
        with converted_errors(f"reading {self.keys.workers}"):
            members = self._redis.smembers(self.keys.workers)
            return sorted(m.decode("utf-8", "replace") for m in members)  # type: ignore[union-attr]
