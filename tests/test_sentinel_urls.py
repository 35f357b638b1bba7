"""Sentinel URLs: what they name, the faults found in them, and their passwords kept out
of every message and log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from resc.config.load import load_config
from resc.config.redis_url import SentinelUrl, ServerUrl, parse_redis_url
from resc.connection.clients import connection_pool
from resc.connection.edge import redact_url
from resc.connection.sentinel import master_of
from resc.core.errors import ConfigError


def test_a_sentinel_url_names_the_sentinels_the_master_and_the_db():
    url = "redis+sentinel://app:s%40cret@10.0.0.1:26379,sentinel-b:26380,[::1]/mymaster/3"
    assert parse_redis_url(url) == SentinelUrl(
        sentinels=(("10.0.0.1", 26379), ("sentinel-b", 26380), ("::1", 26379)),
        master_name="mymaster",
        db=3,
        username="app",
        password="s@cret",
    )


def test_db_0_by_default_and_a_password_without_a_user():
    parsed = parse_redis_url("redis+sentinel://:pw@127.0.0.1:5000/mym")
    assert isinstance(parsed, SentinelUrl)
    assert (parsed.db, parsed.username, parsed.password) == (0, None, "pw")
    assert parse_redis_url("redis+sentinel://h:1/mym/") == SentinelUrl((("h", 1),), "mym")


def test_the_sentinels_own_password_and_tls():
    url = (
        "rediss+sentinel://:pw@h:1/mym/2?sentinel_password=s%26p&sentinel_username=watch"
        "&ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required"
    )
    parsed = parse_redis_url(url)
    assert isinstance(parsed, SentinelUrl)
    assert (parsed.sentinel_username, parsed.sentinel_password) == ("watch", "s&p")
    assert parsed.tls
    assert parsed.tls_options == (("ssl_ca_certs", "/etc/ca.pem"), ("ssl_cert_reqs", "required"))


def test_a_password_may_hold_at_signs_and_slashes():
    parsed = parse_redis_url("redis+sentinel://u:a@b/c:d@h:1/mym/1")
    assert isinstance(parsed, SentinelUrl)
    assert (parsed.password, parsed.sentinels, parsed.master_name) == (
        "a@b/c:d",
        (("h", 1),),
        "mym",
    )


def test_server_urls_are_read_by_redis_py_as_they_are():
    for url in ("redis://h:6379/0", "rediss://h/1", "unix:///run/redis.sock?db=2"):
        assert parse_redis_url(url) == ServerUrl(url)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis+sentinel://h:1", "names no master"),
        ("redis+sentinel://h:1/", "names no master"),
        ("redis+sentinel://h:1,,h:2/mym", "an empty sentinel address"),
        ("redis+sentinel:///mym", "an empty sentinel address"),
        ("redis+sentinel://h:port/mym", "port must be a number from 1 to 65535"),
        ("redis+sentinel://h:0/mym", "port must be a number from 1 to 65535"),
        ("redis+sentinel://h:65536/mym", "port must be a number from 1 to 65535"),
        ("redis+sentinel://h:\uff11\uff12/mym", "port must be a number"),  # full-width digits
        ("redis+sentinel://h o:1/mym", "host must be a name or an IP address"),
        ("redis+sentinel://h:1/mym/x", "the database must be a number"),
        ("redis+sentinel://h:1/mym/-1", "the database must be a number"),
        ("redis+sentinel://h:1/mym/0/9", "more than /MASTER_NAME/DB"),
        ("redis+sentinel://h:1/my%20m", "must not be empty nor hold spaces"),
        ("redis+sentinel://h:1/m%00", "must not be empty nor hold spaces"),
        ("redis+sentinel://h:1/mym?db=2", "unknown query parameter 'db'"),
        ("redis+sentinel://h:1/mym?ssl_ca_certs=/ca", "unknown query parameter"),
        ("redis+sentinel://h:1/mym?sentinel_password=a&sentinel_password=b", "given twice"),
        ("redis+sentinel://h:1/mym?novalue", "name=value pairs"),
        ("redis+sentinel://h:1/mym#frag", "no #fragment"),
        ("redis+sentinel://justapassword@h:1/mym", "[user]:password"),
        ("rediss+sentinel://h:1/m?ssl_cert_reqs=maybe", "ssl_cert_reqs must be one of"),
        ("sentinel://h:1/mym", "must start with redis://"),
        ("redis+sentinel:h:1/mym", "must start with redis://"),
    ],
)
def test_hostile_sentinel_urls_are_refused_with_the_reason(url: str, reason: str):
    with pytest.raises(ValueError) as info:
        parse_redis_url(url)
    assert reason in str(info.value)


def test_a_refused_url_is_never_quoted_in_the_reason():
    """Only the name of an unknown query parameter is shown (a typo), never a value."""
    for url in (
        "redis+sentinel://:hunter2@h:1/mym?hunter2",
        "redis+sentinel://:hunter2@h:x/mym",
        "redis+sentinel://u:hunter2@h:1/mym/hunter2",
        "redis+sentinel://h:1/mym?sentinel_pasword=hunter2",
        "redis+sentinel://h:1/mym?sentinel_password=hunter2&sentinel_password=hunter2",
    ):
        with pytest.raises(ValueError) as info:
            parse_redis_url(url)
        assert "hunter2" not in str(info.value)


def test_a_malformed_sentinel_url_is_a_config_error_at_its_field(tmp_path: Path):
    path = tmp_path / "conf.json"
    config = {
        "redis": {"url": "redis+sentinel://:topsecret@h:1/mym/db"},
        "watchers": [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "o"}}]}],
    }
    path.write_text(json.dumps(config, indent=2))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [problem] = info.value.problems
    assert problem.startswith(f"{path}:3: redis.url: the database must be a number")
    assert "topsecret" not in problem


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis+sentinel://:pw@h:1,h:2/mym/0", "redis+sentinel://:***@h:1,h:2/mym/0"),
        ("redis+sentinel://u:p@s/s@h:1/mym", "redis+sentinel://u:***@h:1/mym"),
        (
            "rediss+sentinel://u:pw@h:1/mym?sentinel_password=spw&ssl_ca_certs=/ca",
            "rediss+sentinel://u:***@h:1/mym?sentinel_password=***&ssl_ca_certs=/ca",
        ),
        (
            "redis+sentinel://h:1/mym?sentinel_username=x&sentinel_password=spw",
            "redis+sentinel://h:1/mym?sentinel_username=x&sentinel_password=***",
        ),
        ("redis+sentinel://:p#w?x@h:1/mym", "redis+sentinel://:***@h:1/mym"),
    ],
)
def test_redact_url_hides_the_passwords_of_a_sentinel_url(url: str, shown: str):
    assert redact_url(url) == shown


def test_the_master_is_the_answer_of_the_highest_config_epoch():
    old, new = ("10.0.0.1", 6379), ("10.0.0.2", 6379)
    # One sentinel has seen the failover (epoch 2), two not yet: the new master wins.
    assert master_of([(1, old), (2, new), (1, old)]) == new
    assert master_of([(3, old), (3, new), (3, new)]) == new
    assert master_of([]) is None


def test_rediss_sentinel_speaks_tls_to_the_master_and_to_the_sentinels():
    url = "rediss+sentinel://:pw@127.0.0.1:1/tlsm/4?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required"
    pool = connection_pool(url, socket_timeout=3)
    assert issubclass(pool.connection_class, redis.SSLConnection)
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["password"], kwargs["ssl_ca_certs"]) == (4, "pw", "/etc/ca.pem")
    assert kwargs["socket_timeout"] == 3
    [sentinel] = kwargs["tracker"]._clients
    assert issubclass(sentinel.connection_pool.connection_class, redis.SSLConnection)
    assert sentinel.connection_pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    plain = connection_pool("redis+sentinel://127.0.0.1:1/plainm")
    assert not issubclass(plain.connection_class, redis.SSLConnection)
