"""The HTTP server itself: uvicorn in a thread beside the daemon, the OpenAPI document,
the docs served without any outside host, and a clear error for an address in use."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from resc.dev.embedded import free_port
from resc.server.service import daemon_service
from tests.conftest import RedisServer, make_config, running, write_config

RULES = [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "out"}}]}]


@pytest.fixture
def base(redis_server: RedisServer, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    config = make_config(redis_server.url, RULES, http={"listen": f"127.0.0.1:{port}"})
    with running(config, tmp_path) as daemon:
        service = daemon_service(daemon, f"127.0.0.1:{port}")
        service.start()
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            service.close()


def test_the_openapi_document_describes_the_health_paths(base: str):
    answer = httpx.get(base + "/openapi.json")
    assert answer.status_code == 200
    document = answer.json()
    assert document["info"]["title"] == "resc"
    assert {"/livez", "/readyz"} <= set(document["paths"])


def test_the_docs_and_their_assets_come_from_the_server_itself(base: str):
    page = httpx.get(base + "/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", page.text)
    assert sorted(urls) == [
        "/docs/assets/favicon-32x32.png",
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
        "/openapi.json",
    ]
    assert "://" not in page.text
    for url in urls:
        asset = httpx.get(base + url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url
    script = httpx.get(base + "/docs/assets/swagger-ui-bundle.js")
    assert script.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert "SwaggerUIBundle" in script.text


def test_an_address_in_use_is_a_one_line_error(redis_server: RedisServer, tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        path = write_config(tmp_path, make_config(redis_server.url, RULES))
        done = subprocess.run(
            [sys.executable, "-m", "resc", "run", "--http", f"127.0.0.1:{port}", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1
    assert done.stderr == f"resc: cannot listen on 127.0.0.1:{port}: Address already in use\n"
