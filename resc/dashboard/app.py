"""The dashboard on resc's HTTP server: its page at `/`, its assets under
/dashboard/static (from the package: no CDN) and its JSON API under /dashboard/api.
Every path needs the dashboard's secret when it has one (resc.dashboard.access); the
actions need more. Responses forbid framing, sniffing and any script, style or request
to another origin (Content-Security-Policy)."""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from starlette.concurrency import run_in_threadpool

from resc import __version__
from resc.config.models import Config
from resc.connection import clients
from resc.core.errors import RescError
from resc.core.metrics import Observed
from resc.dashboard.access import Access, Refused
from resc.dashboard.actions import ActionError, FailedAction, FailedLists
from resc.dashboard.history import History
from resc.dashboard.live import LiveTail
from resc.dashboard.views import overview, queues, rules
from resc.ops import explain
from resc.ops.failed import FailedStore
from resc.ops.status import StatusReader
from resc.server.api import bounded_body

STATIC = files("resc.dashboard") / "static"
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
MOST_EVENT_BYTES = 64 * 1024
MOST_BODY_BYTES = 1024 * 1024


class ExplainBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event: str = Field(max_length=MOST_EVENT_BYTES)
    queue: str | None = None


class Dashboard:
    """The dashboard of a config. `observed` holds the daemon's counters (none for a
    dashboard without watchers); `in_daemon`: it runs inside `resc run`, whose instance
    the overview marks as this one."""

    def __init__(
        self,
        config: Callable[[], Config],
        observed: Observed,
        readiness: Callable[[], dict[str, str]],
        access: Access,
        in_daemon: bool = False,
        interval_s: float = 2.0,
    ) -> None:
        self.config = config
        self.observed = observed
        self.readiness = readiness
        self.access = access
        self.in_daemon = in_daemon
        url = config().redis.url
        self.reader = StatusReader(url)
        # A RedisCluster on a cluster (a node's server URL: from the first read).
        self.redis = clients.ProbedClient(
            url, {"socket_timeout": 5, "socket_connect_timeout": 5, "retry": Retry(NoBackoff(), 0)}
        )
        self.failed = FailedLists(FailedStore(url))
        self.history = History(config, observed, self.reader, interval_s)
        self.live = LiveTail(url, config().listener_channel)

    def start(self) -> None:
        self.history.start()
        self.live.start()

    def close(self) -> None:
        self.history.close()
        self.live.close()
        self.reader.close()
        self.failed.store.close()
        self.redis.close()

    def install(self, app: FastAPI) -> None:
        app.add_exception_handler(Refused, _refused)
        access = self.access

        def page(name: str, media: str) -> Response:
            return Response((STATIC / name).read_bytes(), media_type=media, headers=HEADERS)

        @app.get("/", include_in_schema=False)
        def index(request: Request) -> Response:
            access.check_reader(request)
            return page("index.html", "text/html; charset=utf-8")

        @app.get("/dashboard/static/{name}", include_in_schema=False)
        def asset(name: str, request: Request) -> Response:
            access.check_reader(request)
            if name not in ASSETS:
                raise Refused(404, f"no asset {name!r}")
            return page(name, ASSETS[name])

        def api(path: str, read: Callable[[], Any]) -> None:
            def route(request: Request) -> Response:
                access.check_reader(request)
                return _json(_reading(read))

            app.add_api_route(f"/dashboard/api/{path}", route, include_in_schema=False)

        api("session", self._session)
        api("overview", self._overview)
        api("rules", lambda: rules(self.config(), self.observed, self.history, self.in_daemon))
        api("queues", lambda: queues(self.config(), self.reader, self.redis.get()))
        api("failed", lambda: self.failed.listing(self.config()))

        @app.get("/dashboard/api/live", include_in_schema=False)
        def live(request: Request, after: int = 0) -> Response:
            access.check_reader(request)
            messages, last = self.live.after(after)
            return _json(
                {
                    "channel": self.live.channel,
                    "error": self.live.error,
                    "last": last,
                    "messages": [
                        {"seq": m.seq, "time": m.time_s, "data": m.data} for m in messages
                    ],
                }
            )

        @app.post("/dashboard/api/explain", include_in_schema=False)
        async def explain_event(request: Request) -> Response:
            access.check_reader(request)
            body = _parsed(ExplainBody, await _body(request))
            return _json(self._explain(body))

        @app.post("/dashboard/api/failed", include_in_schema=False)
        async def act(request: Request) -> Response:
            access.check_action(request)
            asked = _parsed(FailedAction, await _body(request))
            client = request.client.host if request.client else "?"
            try:
                done = await run_in_threadpool(self.failed.act, self.config(), asked, client)
            except ActionError as exc:
                raise Refused(400, str(exc)) from None
            except RescError as exc:
                raise Refused(503, str(exc)) from None
            return _json(done)

    def _session(self) -> dict[str, Any]:
        config = self.config()
        return {
            "version": __version__,
            "csrf": self.access.csrf,
            "actions": self.access.actions,
            "in_daemon": self.in_daemon,
            "listener_channel": config.listener_channel,
            "listener_format": config.listener_format,
            "watchers": [w.input_queue for w in config.watchers],
        }

    def _overview(self) -> dict[str, Any]:
        return overview(self.config(), self.history, self.readiness, self.reader, self.in_daemon)

    def _explain(self, body: ExplainBody) -> dict[str, Any]:
        config = self.config()
        watchers = list(enumerate(config.watchers))
        if body.queue:
            watchers = [(i, w) for i, w in watchers if w.input_queue == body.queue]
            if not watchers:
                raise Refused(400, f"no watcher takes events from {body.queue!r}")
        event = body.event.encode()
        # No fetch is called from the page: fetch rules show their URLs.
        return explain.to_json(event, [explain.trace(i, w, event, None) for i, w in watchers])


async def _body(request: Request) -> bytes:
    """The request's body, refused (413) past MOST_BODY_BYTES."""
    body = await bounded_body(request, MOST_BODY_BYTES)
    if body is None:
        raise Refused(413, f"the body is larger than {MOST_BODY_BYTES} bytes")
    return body


def _reading(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except (RescError, redis.RedisError, RedisClusterException) as exc:
        raise Refused(503, f"Redis cannot be read: {exc}") from None


def _parsed(model: type[BaseModel], body: bytes) -> Any:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise Refused(422, problems) from None


def _json(data: Any) -> Response:
    return JSONResponse(data, headers=HEADERS)


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    return JSONResponse({"error": str(exc)}, exc.status, headers={**HEADERS, **(exc.headers or {})})
