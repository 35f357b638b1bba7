"""One resc per taken queue: a second one is refused and harms nothing, a crashed one's
claim is taken over (at once on the same machine), a clean stop releases it."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from resc.config.load import config_from_source
from resc.config.source import read_source
from resc.core.errors import EXIT_FATAL
from resc.engine import owner
from resc.engine.daemon import Daemon
from tests.conftest import make_config, resc_process, running, wait_until, write_config
from tests.webservice import ScriptedService


def hanging_config(url: str, web: ScriptedService) -> dict[str, Any]:
    web.answer("/hang", {"prefix": "never"}, delay_s=30)
    web.answer("/ok", {"prefix": "fine"})
    rule = {
        "on": r"^(?P<kind>\w+)/(?P<n>\d+)$",
        "fetch": [{"url": web.url + "/${kind}", "returns": "db"}],
        "make": {"task": "${db.prefix}/${n}", "queue": "out"},
    }
    return make_config(url, [{"input_queue": "in", "rules": [rule]}])


def test_a_second_resc_is_refused_and_leaves_the_first_ones_events_alone(
    r: redis.Redis, redis_server, tmp_path: Path, web: ScriptedService
):
    path = str(write_config(tmp_path, hanging_config(redis_server.url, web)))
    r.lpush("in", "hang/1")
    first = resc_process(path)
    try:
        wait_until(lambda: web.paths.count("/hang") == 1)
        started = time.monotonic()
        second = resc_process(path)
        _, err = second.communicate(timeout=30)
        assert second.returncode == EXIT_FATAL
        # It saw the first one renew its claim: no need to wait for it to expire.
        assert time.monotonic() - started < owner.OWNER_TTL_S
        assert f"in/taken is held by another resc ({owner._HOST}:{first.pid}:" in err
        assert "Traceback" not in err
        # The first one's event is still in its hands, not counted as interrupted.
        assert r.lrange("in/taken", 0, -1) == [b"hang/1"]
        assert not r.exists("in/taken/attempts", "in")
        assert first.poll() is None
        assert web.paths.count("/hang") == 1
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # A crashed resc on this machine: its claim is taken over at once, not after its TTL.
    started = time.monotonic()
    third = resc_process(path)
    try:
        wait_until(lambda: web.paths.count("/hang") == 2, timeout_s=owner.OWNER_TTL_S / 2)
        assert r.hgetall("in/taken/attempts") == {b"hang/1": b"1"}
    finally:
        third.send_signal(signal.SIGKILL)
        third.wait()
    print(f"took over from a crashed resc in {time.monotonic() - started:.2f} s")


def test_a_claim_of_another_machine_is_waited_out_until_it_expires(r, redis_server, tmp_path):
    config = make_config(
        redis_server.url, [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "out"}}]}]
    )
    r.set("in/taken/owner", "elsewhere:1:00000000.00000000", px=2000)
    r.lpush("in/taken", "left by it")
    started = time.monotonic()
    with running(config, tmp_path):
        wait_until(lambda: r.llen("out") == 1, timeout_s=10)
        waited = time.monotonic() - started
        assert r.get("in/taken/owner") == owner.INSTANCE.encode()
        assert 0 < r.pttl("in/taken/owner") <= owner.OWNER_TTL_S * 1000
    assert 1.5 < waited < 5
    assert r.lrange("out", 0, -1) == [b"left by it"]
    # A clean stop releases the claim.
    assert not r.exists("in/taken/owner")


@pytest.fixture
def short_claims(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(owner, "OWNER_TTL_S", 1.0)
    monkeypatch.setattr(owner, "RENEW_EVERY_S", 0.2)


def test_the_claim_is_renewed_while_resc_runs(r, redis_server, tmp_path, short_claims):
    config = make_config(
        redis_server.url, [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "out"}}]}]
    )
    with running(config, tmp_path):
        wait_until(lambda: r.exists("in/taken/owner"))
        time.sleep(2.5)  # more than twice its time to live
        assert r.get("in/taken/owner") == owner.INSTANCE.encode()
        r.lpush("in", "e")
        wait_until(lambda: r.llen("out") == 1)


def test_a_claim_taken_over_by_another_stops_resc(r, redis_server, tmp_path, short_claims):
    config = make_config(
        redis_server.url, [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "out"}}]}]
    )
    daemon = Daemon(config_from_source(read_source(write_config(tmp_path, config))))
    daemon.start()
    try:
        wait_until(lambda: r.exists("in/taken/owner"))
        r.set("in/taken/owner", "elsewhere:1:00000000.00000000", px=5000)
        wait_until(daemon.stop.is_set, timeout_s=5)
    finally:
        daemon.stop.set()
        assert daemon.wait() == EXIT_FATAL
    assert daemon.failed == ["in"]
    # Its claim is not released: it is the other one's.
    assert r.get("in/taken/owner") == b"elsewhere:1:00000000.00000000"
