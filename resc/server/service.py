"""The HTTP server as a service of the daemon (resc.engine.daemon.Service)."""

from __future__ import annotations

from resc.core.metrics import registry_for
from resc.engine.daemon import Daemon
from resc.server.app import build_app
from resc.server.listener import HttpListener


def daemon_service(daemon: Daemon, listen: str) -> HttpListener:
    """The HTTP server of a running daemon: its metrics, its watchers' readiness."""
    app = build_app(registry_for(daemon), daemon.not_ready)
    return HttpListener(app, listen)
