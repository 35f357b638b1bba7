"""The HTTP app: /metrics (Prometheus text format), /livez (200 while the process runs),
/readyz (200 when resc can work, else 503 with a JSON body saying why), /openapi.json and
/docs (Swagger UI, its assets served from the swagger-ui-bundle package: no CDN)."""

from __future__ import annotations

import json
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.exceptions import HTTPException
from swagger_ui_bundle import swagger_ui_path

from resc import __version__

ASSETS = "/docs/assets"
UNKNOWN_PATH = "resc serves /metrics, /livez and /readyz\n"
# The paths of the API, whose every refusal is a JSON body {"error": "..."}.
API_PREFIX = "/v1/"


def build_app(registry: CollectorRegistry, readiness: Callable[[], dict[str, str]]) -> FastAPI:
    """The app of the health paths and the docs; the API adds its routes to it."""
    app = FastAPI(
        title="resc",
        version=__version__,
        description="Events into Redis queues, tasks out of them.",
        docs_url=None,
        redoc_url=None,
    )
    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/livez", response_class=PlainTextResponse, tags=["health"])
    def livez() -> str:
        """200 while the process runs."""
        return "ok\n"

    @app.get("/readyz", tags=["health"], responses={503: {"description": "not ready"}})
    def readyz() -> Response:
        """200 when resc can work; 503 with what is not ready."""
        not_ready = readiness()
        body = json.dumps({"ready": not not_ready, "not_ready": not_ready}) + "\n"
        return Response(body, 503 if not_ready else 200, media_type="application/json")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="resc API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
            # No badge fetched from validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )

    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404 and not request.url.path.startswith(API_PREFIX):
        return PlainTextResponse(UNKNOWN_PATH, 404)
    return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)


async def _invalid_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()))
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return JSONResponse({"error": "; ".join(problems) or "invalid request"}, 422)
