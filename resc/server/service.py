"""The HTTP server as a service (resc.engine.daemon.Service): the health paths, the docs
and the queue API on one listener, with the API's reaper of claims past their deadline."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import FastAPI
from prometheus_client.registry import Collector

from resc.config.models import Config, HttpConfig, parse_listen
from resc.connection.clients import is_cluster
from resc.core.errors import StoreError
from resc.core.logs import get_logger
from resc.core.metrics import Observed, WatcherStats, registry_for
from resc.engine.daemon import Daemon
from resc.ops.todo_metrics import TodoCollector
from resc.server.access import Tokens, produce_queues, todo_queues
from resc.server.api import STORE_ERRORS, Api
from resc.server.app import build_app
from resc.server.claims import ClaimStore, TodoQueue, cluster_refusal
from resc.server.fastpath import FastPaths
from resc.server.listener import HttpListener

log = get_logger("resc.http")
LOOPBACK = ("127.0.0.1", "::1", "localhost")


class Extension(Protocol):
    """More paths on the same server (the dashboard): installed into the app before it
    serves, started after the API and closed before it."""

    def install(self, app: FastAPI) -> None: ...

    def start(self) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ApiSpec:
    """All the API needs of a config, also as JSON for a process of its own (the
    tokens are not in it: each process reads them from its environment)."""

    redis_url: str
    http: HttpConfig
    produce: frozenset[str]
    todo: dict[str, TodoQueue]

    @classmethod
    def of(cls, config: Config, listen: str) -> ApiSpec:
        http = config.http or HttpConfig.model_validate({"listen": listen})
        return cls(config.redis.url, http, produce_queues(config, http), todo_queues(config, http))

    def to_json(self) -> dict[str, Any]:
        return {
            "redis_url": self.redis_url,
            "http": self.http.model_dump(mode="json"),
            "produce": sorted(self.produce),
            "todo": [[q.name, q.set, q.zrem] for q in self.todo.values()],
        }

    @classmethod
    def from_json(cls, spec: dict[str, Any]) -> ApiSpec:
        todo = {name: TodoQueue(name, set_, zrem) for name, set_, zrem in spec["todo"]}
        http = HttpConfig.model_validate(spec["http"])
        return cls(spec["redis_url"], http, frozenset(spec["produce"]), todo)

    def cluster_refusals(self) -> list[str]:
        """On a Redis Cluster (a cluster URL, or a server URL whose server says it is a
        cluster node), why todo queues cannot be served there, each saying what to
        write. Empty when they can, or when the server cannot be asked now: the API then
        refuses such a queue at its first use (409)."""
        try:
            if not is_cluster(self.redis_url):
                return []
        except StoreError:
            return []
        return [found for queue in self.todo.values() if (found := cluster_refusal(queue))]

    def api(self, reap_interval_s: float = 1.0) -> Api:
        """The API, with the tokens of this process's environment; RescError when one
        is not set."""
        tokens = Tokens.from_environment(self.http)
        return Api(
            ClaimStore(self.redis_url),
            self.produce,
            self.todo,
            tokens,
            self.http.done_queue,
            self.http.max_body_bytes,
            reap_interval_s,
        )


def warn_if_open(tokens: Tokens, address: str) -> None:
    if not tokens.by_role and parse_listen(address)[0] not in LOOPBACK:
        log.warning(
            "the HTTP API takes events and hands out tasks without a token on a "
            "public address: set http.tokens",
            address=address,
        )


class HttpService:
    """Serves the health paths and the API of `config` on `listen`, from start() to
    close(). RescError when the address cannot be bound or a token is not set."""

    def __init__(
        self,
        config: Config,
        listen: str,
        metrics_of: Observed,
        readiness: Callable[[], dict[str, str]] | None = None,
        reap_interval_s: float = 1.0,
        collectors: Sequence[Collector] = (),
        extensions: Sequence[Extension] = (),
    ) -> None:
        """`collectors`: more metric families, beside those of `metrics_of`;
        `extensions`: more paths, installed into the same app."""
        self.api = ApiSpec.of(config, listen).api(reap_interval_s)
        registry = registry_for(metrics_of)
        for collector in collectors:
            registry.register(collector)
        app = build_app(registry, readiness or self.redis_readiness)
        self.api.install(app)
        self.extensions = list(extensions)
        for extension in self.extensions:
            extension.install(app)
        try:
            self.listener = HttpListener(
                FastPaths(app, self.api), listen, on_close=self.api.store.aclose
            )
        except Exception:
            self.api.store.close()
            raise
        warn_if_open(self.api.tokens, listen)

    def redis_readiness(self) -> dict[str, str]:
        """Without watchers, resc is ready when Redis answers."""
        try:
            self.api.store.ping()
        except STORE_ERRORS as exc:
            return {"redis": f"Redis unavailable: {exc}"}
        return {}

    def start(self) -> None:
        self.api.start()
        for extension in self.extensions:
            extension.start()
        self.listener.start()
        log.info(
            "HTTP API ready",
            produce=" ".join(sorted(self.api.produce)) or "-",
            consume=" ".join(sorted(self.api.todo)) or "-",
        )

    def close(self) -> None:
        self.api.closing.set()
        self.listener.close()
        for extension in self.extensions:
            extension.close()
        self.api.close()


def daemon_service(
    daemon: Daemon, listen: str, extensions: Sequence[Extension] = ()
) -> HttpService:
    """The HTTP server of a running daemon: its metrics (with the todo queues' and the
    set_ttl sweep's), its watchers' readiness."""
    todo = TodoCollector(lambda: daemon.config, daemon.expiry_stats, daemon.scheduler_stats)
    return HttpService(
        daemon.config, listen, daemon, daemon.not_ready, collectors=[todo], extensions=extensions
    )


class NoWatchers:
    """The metrics of a resc without watchers (`resc serve`): none but resc's own."""

    def watchers(self) -> list[tuple[str, WatcherStats]]:
        return []

    def queue_lengths(self) -> list[tuple[str, str, int]]:
        return []

    def instances(self) -> list[tuple[str, str, str]]:
        return []
