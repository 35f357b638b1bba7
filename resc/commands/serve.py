"""`resc serve CONF`: the HTTP server of a config (health paths, docs, queue API) without
its watchers, for a separate process or host in front of the same Redis."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from resc.commands.common import load_config_or_exit
from resc.config.models import EMBEDDED_REDIS, parse_listen
from resc.core.errors import EXIT_FATAL, EXIT_OK, EXIT_USAGE, RescError

NAME = "serve"
HELP = "serve the HTTP API of a config, without running its watchers"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONF", help="config file (.hjson or .json)")
    parser.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="where to listen (overrides the config's http.listen)",
    )


def main(args: argparse.Namespace) -> int:
    config = load_config_or_exit(args.config)
    listen = args.http or (config.http.listen if config.http else None)
    if listen is None:
        print("resc: serve needs --http HOST:PORT or http.listen in the config", file=sys.stderr)
        return EXIT_USAGE
    try:
        parse_listen(listen)
    except ValueError as exc:
        print(f"resc: --http: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if config.redis.url == EMBEDDED_REDIS:
        print('resc: serve cannot use redis.url "embedded": use resc run', file=sys.stderr)
        return EXIT_USAGE

    from resc.core.logs import get_logger
    from resc.server.service import ApiSpec, HttpService, NoWatchers

    refusals = ApiSpec.of(config, listen).cluster_refusals()
    if refusals:
        for line in refusals:
            print(f"resc: {line}", file=sys.stderr)
        return EXIT_USAGE

    log = get_logger("resc.serve")
    stop = threading.Event()

    def on_stop(signum: int, _: FrameType | None) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)
    try:
        service = HttpService(config, listen, NoWatchers())
    except RescError as exc:
        print(f"resc: {exc}", file=sys.stderr)
        return EXIT_FATAL
    service.start()
    try:
        stop.wait()
    finally:
        service.close()
    return EXIT_OK
