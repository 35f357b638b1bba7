"""redis-py clients and connection pools for any URL resc accepts (resc.config.redis_url).

A server URL goes to redis-py's from_url as it is. A sentinel URL gives a pool whose
connections ask the sentinels for the master when they connect, refuse a server that
says it is no master (ROLE), and are dropped when the sentinels name another master
(resc.connection.sentinel): a pool hands out no connection to a replaced master, and
master_moved() tells a connection kept across commands (the watcher's) to let go.

A cluster URL (redis+cluster://), or a server URL naming a node of a Redis Cluster
(`INFO cluster` says `cluster_enabled:1`), gives a redis-py RedisCluster: is_cluster()
tells which, cluster_client() makes one (async_cluster_client() an asyncio one). Its
commands go without client retry, as the others' do: its default retries send a script
whose reply was lost again.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from resc.config.redis_url import (
    ClusterUrl,
    SentinelUrl,
    ServerUrl,
    is_cluster_url,
    is_sentinel_url,
    parse_redis_url,
)
from resc.connection.edge import converted_errors, redact_url
from resc.connection.sentinel import MasterTracker, tls_arguments, tracker_for
from resc.core.errors import StoreError


def connection_pool(url: str, **options: Any) -> redis.ConnectionPool:
    """A pool of connections to the server or master the URL names; `options` are
    redis-py's connection arguments (timeouts, retry, client_name...)."""
    target = parse_redis_url(url)
    if isinstance(target, ClusterUrl):
        raise _no_single_server(url)
    if isinstance(target, ServerUrl):
        return redis.ConnectionPool.from_url(url, **options)
    ssl = tls_arguments(target)
    ssl.pop("ssl", None)
    return _MasterPool(
        connection_class=_MasterSSLConnection if target.tls else _MasterConnection,
        **_master_arguments(target),
        **ssl,
        **options,
    )


def _no_single_server(url: str) -> StoreError:
    return StoreError(
        f"{redact_url(url)} names a Redis Cluster, not one server: its clients are "
        "cluster_client() and async_cluster_client() (or a ProbedClient)"
    )


def client(url: str, **options: Any) -> redis.Redis:
    """A client of the server or master the URL names."""
    return redis.Redis.from_pool(connection_pool(url, **options))


def is_cluster(url: str, server: redis.Redis | RedisCluster | None = None) -> bool:
    """Whether the URL names a Redis Cluster: a cluster URL, or a server URL of a node
    that has cluster mode on (asked with `INFO cluster`, on `server` when given, else
    on a connection of its own). A sentinel URL never does. RedisUnavailable or
    StoreError when the server cannot be asked."""
    if isinstance(server, RedisCluster) or is_cluster_url(url):
        return True
    if is_sentinel_url(url):
        return False
    with converted_errors(f"asking {redact_url(url)} whether it is a cluster node"):
        if server is not None:
            info = server.info("cluster")
        else:
            with client(
                url, socket_timeout=5, socket_connect_timeout=5, retry=Retry(NoBackoff(), 0)
            ) as probe:
                info = probe.info("cluster")
    return bool(info.get("cluster_enabled"))


def cluster_client(url: str, **options: Any) -> RedisCluster:
    """A RedisCluster client of the cluster the URL names: a cluster URL's nodes, or the
    node of a server URL, as its startup nodes. Without client retry unless `options`
    give one."""
    target = parse_redis_url(url)
    options.setdefault("retry", Retry(NoBackoff(), 0))
    if isinstance(target, SentinelUrl):
        raise ValueError("a sentinel URL names no cluster")
    if isinstance(target, ServerUrl):
        return RedisCluster.from_url(url, **options)
    ssl = tls_arguments(target)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],  # type: ignore[no-untyped-call, unused-ignore]
        username=target.username,
        password=target.password,
        **ssl,
        **options,
    )


def async_cluster_client(url: str, **options: Any) -> AsyncRedisCluster:
    """An asyncio RedisCluster client, as cluster_client() makes a threaded one; it
    connects at its first command (or `await initialize()`)."""
    target = parse_redis_url(url)
    options.setdefault("retry", AsyncRetry(NoBackoff(), 0))
    if isinstance(target, SentinelUrl):
        raise ValueError("a sentinel URL names no cluster")
    if isinstance(target, ServerUrl):
        return AsyncRedisCluster.from_url(url, **options)
    return AsyncRedisCluster(
        startup_nodes=[AsyncClusterNode(host, port) for host, port in target.nodes],
        username=target.username,
        password=target.password,
        **tls_arguments(target),
        **options,
    )


def async_client(url: str, **options: Any) -> aioredis.Redis:
    """An asyncio client of the server or master the URL names."""
    target = parse_redis_url(url)
    if isinstance(target, ClusterUrl):
        raise _no_single_server(url)
    if isinstance(target, ServerUrl):
        return aioredis.Redis.from_url(url, **options)
    ssl = tls_arguments(target)
    ssl.pop("ssl", None)
    pool = _AsyncMasterPool(
        connection_class=_AsyncMasterSSLConnection if target.tls else _AsyncMasterConnection,
        **_master_arguments(target),
        **ssl,
        **options,
    )
    return aioredis.Redis.from_pool(pool)


def master_moved(connection: Any) -> str | None:
    """Why a connection must be dropped because its server is no longer the master the
    sentinels name; None when it need not (or was made from a server URL)."""
    if isinstance(connection, _MasterConnection):
        connected = connection._sock is not None
    elif isinstance(connection, _AsyncMasterConnection):
        connected = connection.is_connected
    else:
        return None
    return _moved(connection.tracker, connection.host, connection.port) if connected else None


def _master_arguments(target: SentinelUrl) -> dict[str, Any]:
    return {
        "tracker": tracker_for(target),
        "db": target.db,
        "username": target.username,
        "password": target.password,
    }


def _moved(tracker: MasterTracker, host: str, port: int) -> str | None:
    current = tracker.current()
    if current is None or current == (host, port):
        return None
    return (
        f"the sentinels name {current[0]}:{current[1]} as the master of "
        f"{tracker.name!r}, no longer {host}:{port}"
    )


def _not_a_master(host: str, port: int, role: Any) -> redis.ConnectionError:
    shown = role.decode() if isinstance(role, bytes) else str(role)
    return redis.ConnectionError(
        f"{host}:{port}, which the sentinels name as the master, is a {shown} now"
    )


class _MasterConnection(redis.Connection):
    """A connection to the master the sentinels name when it connects."""

    def __init__(self, *, tracker: MasterTracker, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call, unused-ignore]
        self.tracker = tracker

    def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if self._sock:
            return
        self.host, self.port = self.tracker.resolve()
        super().connect_check_health(check_health, retry_socket_connect)
        self.send_command("ROLE")  # type: ignore[no-untyped-call, unused-ignore]
        role = self.read_response()[0]
        if role not in (b"master", "master"):
            self.disconnect()  # type: ignore[no-untyped-call, unused-ignore]
            raise _not_a_master(self.host, self.port, role)


class _MasterSSLConnection(_MasterConnection, redis.SSLConnection):
    pass


class _MasterPool(redis.ConnectionPool):
    """Connections to the master; the tracker checks the sentinels while the pool is
    open (from its first connection until disconnect(), its close)."""

    def get_connection(self, *args: Any, **options: Any) -> Any:
        self.connection_kwargs["tracker"].attach(self)
        connection = super().get_connection(*args, **options)
        if master_moved(connection):
            try:
                connection.disconnect()  # type: ignore[no-untyped-call, unused-ignore]
                connection.connect()  # type: ignore[no-untyped-call, unused-ignore]
            except BaseException:
                self.release(connection)
                raise
        return connection

    def disconnect(self, inuse_connections: bool = True) -> None:
        self.connection_kwargs["tracker"].detach(self)
        super().disconnect(inuse_connections)


class _AsyncMasterConnection(aioredis.Connection):
    def __init__(self, *, tracker: MasterTracker, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tracker = tracker

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if self.is_connected:
            return
        # The sentinels are asked with blocking calls: off the event loop.
        self.host, self.port = await asyncio.to_thread(self.tracker.resolve)
        await super().connect_check_health(check_health, retry_socket_connect)
        await self.send_command("ROLE")
        role = (await self.read_response())[0]
        if role not in (b"master", "master"):
            await self.disconnect()
            raise _not_a_master(self.host, self.port, role)


class _AsyncMasterSSLConnection(_AsyncMasterConnection, aioredis.SSLConnection):
    pass


class _AsyncMasterPool(aioredis.ConnectionPool):
    async def get_connection(self, *args: Any, **options: Any) -> Any:
        self.connection_kwargs["tracker"].attach(self)
        return await super().get_connection(*args, **options)  # type: ignore[no-untyped-call, unused-ignore]

    async def disconnect(self, inuse_connections: bool = True) -> None:
        self.connection_kwargs["tracker"].detach(self)
        await super().disconnect(inuse_connections)

    async def ensure_connection(self, connection: Any) -> None:
        if master_moved(connection):
            await connection.disconnect()
        await super().ensure_connection(connection)


class ProbedClient:
    """A client of one URL that is a RedisCluster when the URL names a cluster: from its
    first use for a cluster URL, or once the server of a server URL says at the first
    use that it is a cluster node (`INFO cluster`). StoreError at construction when
    redis-py cannot use the URL."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self._url = url
        self._options = options
        self._client: redis.Redis | RedisCluster | None = None
        self._probed = is_cluster_url(url)
        if not self._probed:
            try:
                self._client = client(url, **options)
            except ValueError as exc:
                raise StoreError(f"cannot use the Redis URL {redact_url(url)}: {exc}") from None

    @property
    def current(self) -> redis.Redis | RedisCluster | None:
        """The client made so far, without asking the server (None for a cluster URL
        before its first use)."""
        return self._client

    @property
    def probed(self) -> bool:
        """Whether the client is known to be the right kind (a cluster URL's always is)."""
        return self._probed

    def get(self) -> redis.Redis | RedisCluster:
        """The client; redis-py's errors, or RedisClusterException, when the first use
        cannot reach the server."""
        if self._client is None:
            self._client = cluster_client(self._url, **self._options)
        elif not self._probed:
            info = self._client.info("cluster")
            self._probed = True
            if info.get("cluster_enabled"):
                self._client.close()
                self._client = cluster_client(self._url, **self._options)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class AsyncProbedClient:
    """ProbedClient on redis.asyncio: a RedisCluster from the first use for a cluster
    URL, or once the server of a server URL says at the first use that it is a cluster
    node. Made anywhere; it connects in the event loop of its first use, which owns it
    from then on (aclose() there)."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self._url = url
        self._options = options
        self._client: aioredis.Redis | AsyncRedisCluster | None = None
        self._probed = is_cluster_url(url)
        self._lock: asyncio.Lock | None = None
        if not self._probed:
            try:
                self._client = async_client(url, **options)
            except ValueError as exc:
                raise StoreError(f"cannot use the Redis URL {redact_url(url)}: {exc}") from None

    @property
    def current(self) -> aioredis.Redis | AsyncRedisCluster | None:
        """The client made so far, without asking the server."""
        return self._client

    @property
    def probed(self) -> bool:
        """Whether the client is known to be the right kind (a cluster URL's always is)."""
        return self._probed

    async def get(self) -> aioredis.Redis | AsyncRedisCluster:
        """The client; redis-py's errors, or RedisClusterException, when the first use
        cannot reach the server (the next use tries again)."""
        if self._probed and self._client is not None:
            return self._client
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._client is None:
                made = async_cluster_client(self._url, **self._options)
                try:
                    await made.initialize()
                except BaseException:
                    await made.aclose()
                    raise
                self._client = made
            elif not self._probed:
                info = await self._client.info("cluster")
                self._probed = True
                if info.get("cluster_enabled"):
                    await self._client.aclose()
                    self._client = None
                    return await self.get()
            return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


class ClientOf:
    """A client of whatever URL the running config names: made at the first use, and
    made again when a reload changes the URL. Commands go without client retry: its
    users read and decide again at their next pass."""

    def __init__(self, name: str, socket_timeout_s: float = 10) -> None:
        self.name = name
        self.url = ""
        self._timeout_s = socket_timeout_s
        self._client: redis.Redis | RedisCluster | None = None

    def get(self, url: str) -> redis.Redis | RedisCluster:
        """The client; a RedisCluster when the URL names a cluster (asked of the server at
        the first use of a server URL: RedisUnavailable or StoreError when it cannot
        be)."""
        if self._client is None or url != self.url:
            self.close()
            options: dict[str, Any] = {
                "socket_timeout": self._timeout_s,
                "socket_connect_timeout": 5,
                "retry": Retry(NoBackoff(), 0),
                "client_name": self.name,
            }
            # A RedisCluster connects as it is made.
            with converted_errors(f"connecting to {redact_url(url)}"):
                made: redis.Redis | RedisCluster = (
                    cluster_client(url, **options)
                    if is_cluster_url(url)
                    else client(url, **options)
                )
                if isinstance(made, redis.Redis) and is_cluster(url, made):
                    made.close()
                    made = cluster_client(url, **options)
            self._client = made
            self.url = url
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
