"""`resc dashboard CONF`: the web dashboard of a config at `/` of an HTTP server of its
own (with the health paths and the API, as `resc serve`), without its watchers; and the
dashboard options that `resc run` shares."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING

from resc.commands.common import load_config_or_exit
from resc.config.models import EMBEDDED_REDIS, parse_listen
from resc.core.errors import EXIT_FATAL, EXIT_OK, EXIT_USAGE, RescError

if TYPE_CHECKING:
    from resc.dashboard.access import Access
    from resc.dashboard.app import Dashboard
    from resc.engine.daemon import Daemon

NAME = "dashboard"
HELP = "serve the web dashboard of a config (and its HTTP API), without running its watchers"


def add_options(parser: argparse.ArgumentParser, standalone: bool) -> None:
    """The options of the dashboard; `resc run` has --dashboard to turn it on."""
    if not standalone:
        parser.add_argument(
            "--dashboard",
            action="store_true",
            help="serve the web dashboard at / of the HTTP server (needs --http or http.listen)",
        )
    parser.add_argument(
        "--dashboard-actions",
        action="store_true",
        help="let the dashboard requeue and delete failed events and tasks (off by default)",
    )
    parser.add_argument(
        "--dashboard-password-env",
        metavar="VAR",
        default="RESC_DASHBOARD_PASSWORD",
        help="the environment variable holding the dashboard's password (basic auth) or "
        "token (bearer); needed unless it listens on loopback (default: "
        "RESC_DASHBOARD_PASSWORD)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONF", help="config file (.hjson or .json)")
    parser.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="where to listen (overrides the config's http.listen)",
    )
    add_options(parser, standalone=True)


def access_of(args: argparse.Namespace, listen: str) -> Access:
    """The dashboard's access from the options; RescError without the password needed."""
    from resc.dashboard.access import Access

    return Access.from_environment(
        args.dashboard_password_env, args.dashboard_actions, parse_listen(listen)[0]
    )


def daemon_dashboard(daemon: Daemon, access: Access) -> Dashboard:
    """The dashboard of a running daemon: its config (as reloaded), counters, readiness."""
    from resc.dashboard.app import Dashboard

    return Dashboard(lambda: daemon.config, daemon, daemon.not_ready, access, in_daemon=True)


def main(args: argparse.Namespace) -> int:
    config = load_config_or_exit(args.config)
    listen = args.http or (config.http.listen if config.http else None)
    if listen is None:
        print(
            "resc: dashboard needs --http HOST:PORT or http.listen in the config",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        parse_listen(listen)
    except ValueError as exc:
        print(f"resc: --http: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if config.redis.url == EMBEDDED_REDIS:
        print(
            'resc: dashboard cannot use redis.url "embedded": use resc run --dashboard',
            file=sys.stderr,
        )
        return EXIT_USAGE

    from resc.core.logs import get_logger
    from resc.dashboard.app import Dashboard
    from resc.server.service import ApiSpec, HttpService, NoWatchers

    refusals = ApiSpec.of(config, listen).cluster_refusals()
    if refusals:
        for line in refusals:
            print(f"resc: {line}", file=sys.stderr)
        return EXIT_USAGE

    log = get_logger("resc.dashboard")
    stop = threading.Event()

    def on_stop(signum: int, _: FrameType | None) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)
    holder: list[HttpService] = []
    try:
        access = access_of(args, listen)
        dashboard = Dashboard(
            lambda: config,
            NoWatchers(),
            lambda: holder[0].redis_readiness() if holder else {},
            access,
        )
        try:
            holder.append(HttpService(config, listen, NoWatchers(), extensions=[dashboard]))
        except RescError:
            dashboard.close()
            raise
    except RescError as exc:
        print(f"resc: {exc}", file=sys.stderr)
        return EXIT_FATAL
    service = holder[0]
    service.start()
    log.info("dashboard ready", address=service.listener.address, actions=access.actions)
    try:
        stop.wait()
    finally:
        service.close()
    return EXIT_OK
