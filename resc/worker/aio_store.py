"""The Redis side of an AsyncWorker: the same keys and Lua scripts as WorkerStore (the
calls are built by store.Calls), on redis.asyncio, with no client retries either."""

from __future__ import annotations

from typing import Any

from redis.asyncio.client import Redis
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.retry import Retry

from resc.connection import clients
from resc.connection.edge import converted_errors, redact_url
from resc.worker import store as worker_store
from resc.worker.store import Call, Calls, WorkerKeys, script_sources, server_version


class AsyncWorkerStore:
    """The connections of one AsyncWorker (a pool: a blocking take holds one)."""

    def __init__(
        self, keys: WorkerKeys, client_name: str, url: str | None, client: Redis | None
    ) -> None:
        self.keys = keys
        self.calls = Calls(keys)
        self._owned = client is None
        if client is None:
            assert url is not None
            self.display_url = redact_url(url)
            client = clients.async_client(
                url,
                socket_timeout=worker_store.TAKE_BLOCK_S + 10,
                socket_connect_timeout=5,
                retry=Retry(NoBackoff(), 0),
                client_name=client_name.replace(" ", "_"),
            )
        else:
            self.display_url = worker_store.describe(connection_kwargs(client))
        self._redis: Redis = client
        self._has_lmove = True
        self._scripts: dict[str, AsyncScript] = {}

    async def close(self) -> None:
        """Close the connections, unless they are a given client's: its owner does."""
        if self._owned:
            await self._redis.aclose()

    async def connect(self) -> None:
        with converted_errors(f"connecting to {self.display_url}"):
            version = server_version(await self._redis.info("server"))
            self._has_lmove = version >= (6, 2)
            self._scripts = {
                name: self._redis.register_script(source)
                for name, source in script_sources(version).items()
            }

    async def take(self) -> bytes | None:
        k = self.keys
        block_s = worker_store.TAKE_BLOCK_S
        with converted_errors(f"taking from {k.queue}"):
            if self._has_lmove:
                task = await self._redis.blmove(k.queue, k.taken, block_s, "RIGHT", "LEFT")  # type: ignore[arg-type]
            else:
                task = await self._redis.brpoplpush(k.queue, k.taken, block_s)
            return task if isinstance(task, bytes | None) else task.encode()

    async def zrem(self, task: bytes) -> None:
        assert self.keys.set is not None
        with converted_errors(f"removing a task from {self.keys.set}"):
            await self._redis.zrem(self.keys.set, task)

    async def _run(self, call: Call) -> int:
        with converted_errors(call.action):
            return int(await self._scripts[call.script](keys=call.keys, args=call.args))

    async def done(self, task: bytes, zrem: bool) -> bool:
        return bool(await self._run(self.calls.done(task, zrem)))

    async def fail(self, task: bytes, reason: str, attempts: int, zrem: bool) -> bool:
        return bool(await self._run(self.calls.fail(task, reason, attempts, zrem)))

    async def release(self, task: bytes) -> bool:
        return bool(await self._run(self.calls.release(task)))

    async def join(self, worker_id: str, heartbeat_ttl_ms: int, holder: str) -> int:
        return await self._run(self.calls.join(worker_id, heartbeat_ttl_ms, holder))

    async def reap(self, worker_id: str, leaving: bool = False) -> int:
        return await self._run(self.calls.reap(worker_id, leaving))

    async def taken_tasks(self) -> list[bytes]:
        with converted_errors(f"reading {self.keys.taken}"):
            tasks = await self._redis.lrange(self.keys.taken, 0, -1)
            return [t if isinstance(t, bytes) else t.encode() for t in tasks]

    async def beat(self, worker_id: str, heartbeat_ttl_ms: int, holder: str) -> tuple[bool, bool]:
        k = self.keys
        assert k.heartbeat is not None
        with converted_errors("refreshing the heartbeat"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.exists(k.heartbeat)
            pipe.sismember(k.workers, worker_id)
            pipe.set(k.heartbeat, holder, px=heartbeat_ttl_ms)
            pipe.sadd(k.workers, worker_id)
            alive, registered, _, _ = await pipe.execute()
            return bool(alive), bool(registered)

    async def scan_taken(self, cursor: int, count: int) -> tuple[int, list[str]]:
        with converted_errors(f"looking for taken lists of {self.keys.queue}"):
            next_cursor, found = await self._redis.scan(
                cursor, match=self.calls.taken_pattern(), count=count
            )
        return int(next_cursor), self.calls.worker_ids_of(found)

    async def worker_ids(self) -> list[str]:
        with converted_errors(f"reading {self.keys.workers}"):
            members = await self._redis.smembers(self.keys.workers)
            return sorted(
                m if isinstance(m, str) else m.decode("utf-8", "replace") for m in members
            )


def connection_kwargs(client: Redis) -> dict[str, Any]:
    """The connection settings of an asyncio client (its pool's)."""
    kwargs: dict[str, Any] = client.connection_pool.connection_kwargs
    return kwargs
