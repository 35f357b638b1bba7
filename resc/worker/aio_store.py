"""The Redis side of an AsyncWorker: the same keys and Lua scripts as WorkerStore (the
calls are built by store.Calls), on redis.asyncio, with no client retries either; on a
Redis Cluster as WorkerStore is (see store.py)."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from resc.config.redis_url import is_cluster_url
from resc.connection import clients
from resc.connection.edge import converted_errors, redact_url
from resc.core.errors import StoreError
from resc.worker import store as worker_store
from resc.worker.store import (
    Call,
    Calls,
    Notice,
    WorkerKeys,
    cluster_refusal,
    script_sources,
    server_version,
)


class AsyncWorkerStore:
    """The connections of one AsyncWorker (a pool: a blocking take holds one)."""

    def __init__(
        self, keys: WorkerKeys, client_name: str, url: str | None, client: Redis | None
    ) -> None:
        self.keys = keys
        self.calls = Calls(keys)
        self._owned = client is None
        self._url = url
        self._options: dict[str, Any] = {
            "socket_timeout": worker_store.TAKE_BLOCK_S + 10,
            "socket_connect_timeout": 5,
            "retry": AsyncRetry(NoBackoff(), 0),
            "client_name": client_name.replace(" ", "_"),
        }
        self._redis: Redis | RedisCluster | None = None
        if client is None:
            assert url is not None
            self.display_url = redact_url(url)
            if not is_cluster_url(url):
                self._redis = clients.async_client(url, **self._options)
        else:
            self.display_url = worker_store.describe(connection_kwargs(client))
            self._redis = client
        self._has_lmove = True
        self._notice_apart = False
        self._scripts: dict[str, AsyncScript] = {}

    @property
    def on_cluster(self) -> bool:
        return isinstance(self._redis, RedisCluster)

    @property
    def _client(self) -> Redis | RedisCluster:
        if self._redis is None:
            raise StoreError(f"not connected to {self.display_url} yet")
        return self._redis

    async def close(self) -> None:
        """Close the connections, unless they are a given client's: its owner does."""
        if self._owned and self._redis is not None:
            await self._redis.aclose()

    async def connect(self) -> None:
        with converted_errors(f"connecting to {self.display_url}"):
            if self._redis is None:
                assert self._url is not None
                self._redis = await _cluster(self._url, self._options)
            elif isinstance(self._redis, aioredis.Redis) and (
                await self._redis.info("cluster")
            ).get("cluster_enabled"):
                if not self._owned:
                    raise StoreError(
                        f"{self.display_url} is a node of a Redis Cluster: give the worker "
                        "its URL rather than a client of one node"
                    )
                assert self._url is not None
                await self._redis.aclose()
                self._redis = await _cluster(self._url, self._options)
            if isinstance(self._redis, RedisCluster):
                refusal = cluster_refusal(self.keys)
                if refusal is not None:
                    raise StoreError(refusal)
                self._notice_apart = self.keys.notice_apart()
                node = self._redis.get_node_from_key(self.keys.queue)
                info = await self._redis.info("server", target_nodes=node)
            else:
                info = await self._redis.info("server")
            version = server_version(info)
            self._has_lmove = version >= (6, 2)
            self._scripts = {
                name: self._client.register_script(source)
                for name, source in script_sources(version).items()
            }

    async def take(self) -> bytes | None:
        k = self.keys
        block_s = worker_store.TAKE_BLOCK_S
        with converted_errors(f"taking from {k.queue}"):
            if self._has_lmove:
                task = await self._client.blmove(k.queue, k.taken, block_s, "RIGHT", "LEFT")  # type: ignore[arg-type]
            else:
                task = await self._client.brpoplpush(k.queue, k.taken, block_s)
            return task if isinstance(task, bytes | None) else task.encode()

    async def zrem(self, task: bytes) -> None:
        assert self.keys.set is not None
        with converted_errors(f"removing a task from {self.keys.set}"):
            await self._client.zrem(self.keys.set, task)

    async def _run(self, call: Call) -> int:
        with converted_errors(call.action):
            return int(await self._scripts[call.script](keys=call.keys, args=call.args))

    async def done(self, task: bytes, zrem: bool, notice: Notice | None = None) -> bool:
        """See WorkerStore.done."""
        if not self._notice_apart:
            return bool(await self._run(self.calls.done(task, zrem)))
        k = self.keys
        notice = notice if notice is not None else Notice()
        if not notice.pushed:
            with converted_errors(f"reading {k.taken}"):
                if await self._client.lpos(k.taken, task) is None:  # type: ignore[arg-type]
                    return False
            with converted_errors(f"notifying {k.done_queue}"):
                await self._client.lpush(k.done_queue, task)  # type: ignore[arg-type]
            notice.pushed = True
        await self._run(self.calls.done(task, zrem, notify=False))
        return True

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
            tasks = await self._client.lrange(self.keys.taken, 0, -1)
            return [t if isinstance(t, bytes) else t.encode() for t in tasks]

    async def beat(self, worker_id: str, heartbeat_ttl_ms: int, holder: str) -> tuple[bool, bool]:
        k = self.keys
        assert k.heartbeat is not None
        with converted_errors("refreshing the heartbeat"):
            # One slot on a cluster (connect() checked): a transaction there too.
            pipe = self._client.pipeline(transaction=True)
            pipe.exists(k.heartbeat)
            pipe.sismember(k.workers, worker_id)
            pipe.set(k.heartbeat, holder, px=heartbeat_ttl_ms)
            pipe.sadd(k.workers, worker_id)
            alive, registered, _, _ = await pipe.execute()
            return bool(alive), bool(registered)

    async def scan_taken(self, cursor: int, count: int) -> tuple[int, list[str]]:
        with converted_errors(f"looking for taken lists of {self.keys.queue}"):
            pattern = self.calls.taken_pattern()
            if isinstance(self._redis, RedisCluster):
                node = self._redis.get_node_from_key(self.keys.queue)
                cursors, found = await self._redis.scan(
                    cursor, match=pattern, count=count, target_nodes=node
                )
                # RedisCluster gives a cursor per node asked: here, one.
                next_cursor = next(iter(cursors.values()))  # type: ignore[attr-defined]
            else:
                next_cursor, found = await self._client.scan(cursor, match=pattern, count=count)
        return int(next_cursor), self.calls.worker_ids_of(found)

    async def worker_ids(self) -> list[str]:
        with converted_errors(f"reading {self.keys.workers}"):
            members = await self._client.smembers(self.keys.workers)
            return sorted(
                m if isinstance(m, str) else m.decode("utf-8", "replace") for m in members
            )


async def _cluster(url: str, options: dict[str, Any]) -> RedisCluster:
    made = clients.async_cluster_client(url, **options)
    await made.initialize()
    return made


def connection_kwargs(client: Redis) -> dict[str, Any]:
    """The connection settings of an asyncio client (its pool's)."""
    kwargs: dict[str, Any] = client.connection_pool.connection_kwargs
    return kwargs
