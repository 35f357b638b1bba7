"""`resc run CONF` (or `resc CONF`): the daemon."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from resc.commands.common import load_config_or_exit
from resc.commands.dashboard import access_of, add_options, daemon_dashboard
from resc.config.models import EMBEDDED_REDIS, Config, RedisConfig, parse_listen
from resc.core.errors import EXIT_FATAL, EXIT_USAGE, RescError, StoreError

if TYPE_CHECKING:
    from resc.dashboard.access import Access

NAME = "run"
HELP = "run the daemon on a config file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONF", help="config file (.hjson or .json)")
    parser.add_argument(
        "--embedded-redis",
        action="store_true",
        help='run a private Redis server for this run, as redis.url: "embedded" does '
        "(needs pip install 'resc[embedded]'); the config's redis.url is ignored",
    )
    parser.add_argument(
        "--watch-config",
        action="store_true",
        help="reload the config when its file changes (as SIGHUP does)",
    )
    parser.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve /metrics, /livez, /readyz and the HTTP API there (overrides the config's "
        "http.listen)",
    )
    parser.add_argument(
        "--instance",
        metavar="ID",
        type=_instance_id,
        default=os.environ.get("RESC_INSTANCE") or None,
        help="this resc's instance id (default: $RESC_INSTANCE, else host:pid:random); "
        "each watcher takes into <taken_queue>/ID",
    )
    parser.add_argument(
        "--heartbeat-ttl",
        metavar="S",
        type=_heartbeat_ttl,
        help="seconds a watcher's heartbeat lives unless refreshed, after which another "
        "resc puts its events back (overrides the config's heartbeat_ttl, default 15)",
    )
    parser.add_argument(
        "--fail-fast",
        action="store_true",
        help="exit at once (status 1) when Redis cannot be reached at start, "
        "instead of waiting for it",
    )
    add_options(parser, standalone=False)


class _Instance(NamedTuple):
    """--instance and --heartbeat-ttl."""

    id: str | None
    heartbeat_ttl_s: float | None


def _instance_id(text: str) -> str:
    from resc.engine.instances import check_instance_id

    try:
        return check_instance_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _heartbeat_ttl(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or not 3 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(
            f"{text} s: the heartbeat must live from 3 to 3600 seconds (refreshed every "
            "third of it)"
        )
    return seconds


def main(args: argparse.Namespace) -> int:
    config = load_config_or_exit(args.config)
    instance = _Instance(args.instance, args.heartbeat_ttl)
    if args.http is not None:
        try:
            parse_listen(args.http)
        except ValueError as exc:
            print(f"resc: --http: {exc}", file=sys.stderr)
            return EXIT_USAGE
    dashboard = None
    if args.dashboard or args.dashboard_actions:
        listen = args.http or (config.http.listen if config.http else None)
        if not args.dashboard or listen is None:
            print(
                "resc: the dashboard needs --dashboard and --http HOST:PORT (or http.listen)",
                file=sys.stderr,
            )
            return EXIT_USAGE
        try:
            dashboard = access_of(args, listen)
        except RescError as exc:
            print(f"resc: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if args.embedded_redis or config.redis.url == EMBEDDED_REDIS:
        if args.watch_config:
            # A reloaded config would point the watchers away from the private server.
            print("resc: --watch-config cannot be used with an embedded Redis", file=sys.stderr)
            return EXIT_USAGE
        return _run_with_private_redis(config, args.http, dashboard, instance)
    if args.fail_fast and not _redis_reachable(config):
        return EXIT_FATAL
    refusal = _cluster_refusal(config, Path(args.config))
    if refusal:
        for line in refusal:
            print(f"resc: {line}", file=sys.stderr)
        return EXIT_USAGE
    listen = args.http or (config.http.listen if config.http else None)
    if listen is not None:
        from resc.server.service import ApiSpec

        refusals = ApiSpec.of(config, listen).cluster_refusals()
        if refusals:
            for line in refusals:
                print(f"resc: {line}", file=sys.stderr)
            return EXIT_USAGE
    return _run(config, Path(args.config), args.watch_config, args.http, dashboard, instance)


def _run(
    config: Config,
    config_path: Path | None,
    watch_config: bool,
    http_listen: str | None,
    dashboard: Access | None,
    instance: _Instance,
    on_forced_exit: Callable[[], None] | None = None,
) -> int:
    from resc.engine import daemon
    from resc.server.api_process import daemon_api_process
    from resc.server.service import daemon_service

    listen = http_listen or (config.http.listen if config.http else None)
    services: list[daemon.ServiceFactory] = []
    if listen is not None:
        in_own_process = config.http is None or config.http.api_process

        def serve(running: daemon.Daemon) -> daemon.Service:
            extensions = [daemon_dashboard(running, dashboard)] if dashboard is not None else []
            if in_own_process:
                return daemon_api_process(running, listen, extensions)
            return daemon_service(running, listen, extensions)

        services.append(serve)
    try:
        return daemon.run(
            config,
            config_path,
            watch_config,
            services,
            on_forced_exit,
            instance=instance.id,
            heartbeat_ttl_s=instance.heartbeat_ttl_s,
            refusal=_cluster_refusal,
        )
    except RescError as exc:
        print(f"resc: {exc}", file=sys.stderr)
        return EXIT_FATAL


def _cluster_refusal(config: Config, path: Path) -> list[str]:
    """On a Redis Cluster (a cluster URL, or a server URL whose server says it is a
    cluster node), why the config cannot run there: the slot errors of `resc check`.
    Empty when it can (or when the server cannot be asked now: the watchers wait for
    it)."""
    from resc.config.source import read_source
    from resc.connection.clients import is_cluster
    from resc.ops.lint import cluster_findings

    try:
        if not is_cluster(config.redis.url):
            return []
    except StoreError:
        return []
    try:
        source = read_source(path)
    except RescError:
        return []
    found = cluster_findings(config, source)
    if found.errors:
        return [f.text for f in found.errors] + ["see `resc check` for what to write"]
    return []


def _redis_reachable(config: Config) -> bool:
    from resc.engine.store import Store

    store = Store(config.redis.url)
    try:
        store.connect()
        return True
    except StoreError as exc:
        print(f"resc: Redis cannot be reached (--fail-fast): {exc}", file=sys.stderr)
        return False
    finally:
        store.close()


def _run_with_private_redis(
    config: Config, http_listen: str | None, dashboard: Access | None, instance: _Instance
) -> int:
    """The daemon on a private Redis server that lives as long as it does (a second
    signal, which exits at once, kills the server first). Not reloadable: a reloaded
    config would point the watchers away from the server."""
    from resc.dev.private_redis import start_private_redis

    try:
        server = start_private_redis()
    except RescError as exc:
        print(f"resc: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(
        f"resc: embedded Redis server at {server.url} (for producers and workers; "
        "it stops when resc stops)",
        flush=True,
    )
    try:
        private = config.model_copy(update={"redis": RedisConfig(url=server.url)})
        return _run(
            private,
            None,
            False,
            http_listen,
            dashboard,
            instance,
            on_forced_exit=lambda: server.close(at_once=True),
        )
    finally:
        server.close()
