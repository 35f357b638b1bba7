"""Cluster URLs: what they name, the faults found in them, their passwords kept out of
messages; the RedisCluster client made from them, and a cluster node's redis:// URL
found to be one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

from resc.config.load import load_config
from resc.config.redis_url import ClusterUrl, is_cluster_url, parse_redis_url
from resc.connection.clients import (
    ClientOf,
    async_client,
    cluster_client,
    connection_pool,
    is_cluster,
)
from resc.connection.edge import converted_errors, redact_url
from resc.core.errors import ConfigError, RedisUnavailable, StoreError
from resc.dev.embedded import free_port
from resc.engine.store import Store


def test_a_cluster_url_names_its_startup_nodes():
    assert parse_redis_url("redis+cluster://a:7000,b:7001,[::1]:7002,c") == ClusterUrl(
        nodes=(("a", 7000), ("b", 7001), ("::1", 7002), ("c", 6379))
    )
    assert parse_redis_url("redis+cluster://u:p%40w@a:7000/0") == ClusterUrl(
        nodes=(("a", 7000),), username="u", password="p@w"
    )
    assert parse_redis_url("redis+cluster://:s@c/ret@a:1/") == ClusterUrl(
        nodes=(("a", 1),), password="s@c/ret"
    )


def test_rediss_cluster_speaks_tls_with_the_ssl_options():
    assert parse_redis_url(
        "rediss+cluster://a:1?ssl_ca_certs=/ca.pem&ssl_cert_reqs=none"
    ) == ClusterUrl(
        nodes=(("a", 1),),
        tls=True,
        tls_options=(("ssl_ca_certs", "/ca.pem"), ("ssl_cert_reqs", "none")),
    )


def test_only_the_cluster_schemes_say_cluster():
    assert is_cluster_url("redis+cluster://a:1")
    assert is_cluster_url("rediss+cluster://a:1")
    assert not is_cluster_url("redis://a:1/0")
    assert not is_cluster_url("redis+sentinel://a:1/m")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis+cluster://", "empty node address"),
        ("redis+cluster://a:1,,b:2", "empty node address"),
        ("redis+cluster://a:0", "node's port must be a number from 1 to 65535"),
        ("redis+cluster://a:x", "node's port must be a number"),
        ("redis+cluster://a b:1", "node's host must be a name or an IP address"),
        ("redis+cluster://a:1/2", "database 0 only"),
        ("redis+cluster://a:1/mym", "database 0 only"),
        ("redis+cluster://a:1?db=0", "unknown query parameter 'db' (known: none)"),
        ("redis+cluster://a:1?ssl_ca_certs=/ca", "unknown query parameter"),
        ("rediss+cluster://a:1?ssl_cert_reqs=maybe", "ssl_cert_reqs must be one of"),
        ("redis+cluster://a:1#x", "no #fragment"),
        ("redis+cluster://justapassword@a:1", "[user]:password"),
        ("cluster://a:1", "redis+cluster://"),
    ],
)
def test_hostile_cluster_urls_are_refused_with_the_reason(url: str, reason: str):
    with pytest.raises(ValueError) as info:
        parse_redis_url(url)
    assert reason in str(info.value)


def test_a_refused_cluster_url_is_never_quoted_in_the_reason():
    for url in (
        "redis+cluster://:hunter2@a:x",
        "redis+cluster://u:hunter2@a:1/hunter2",
        "redis+cluster://a:1?hunter2",
        "redis+cluster://hunter2@a:1",
        "rediss+cluster://:hunter2@a:1?ssl_cert_reqs=hunter2",
    ):
        with pytest.raises(ValueError) as info:
            parse_redis_url(url)
        assert "hunter2" not in str(info.value)


def test_a_malformed_cluster_url_is_a_config_error_at_its_field(tmp_path: Path):
    path = tmp_path / "conf.json"
    config = {
        "redis": {"url": "redis+cluster://:topsecret@a:1/db"},
        "watchers": [{"input_queue": "in", "rules": [{"on": "", "make": {"queue": "o"}}]}],
    }
    path.write_text(json.dumps(config, indent=2))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [problem] = info.value.problems
    assert problem.startswith(f"{path}:3: redis.url: a cluster has database 0 only")
    assert "topsecret" not in problem


def test_redact_url_hides_the_password_of_a_cluster_url():
    assert redact_url("redis+cluster://u:pw@a:1,b:2") == "redis+cluster://u:***@a:1,b:2"
    assert redact_url("rediss+cluster://:p@w@a:1") == "rediss+cluster://:***@a:1"


def test_a_cluster_url_gives_no_single_server_client():
    for make in (connection_pool, async_client):
        with pytest.raises(StoreError) as info:
            make("redis+cluster://:hunter2@a:1")
        assert str(info.value) == (
            "redis+cluster://:***@a:1 names a Redis Cluster, not one server: its clients "
            "are cluster_client() and async_cluster_client() (or a ProbedClient)"
        )


def test_the_cluster_client_follows_the_url_without_retries(cluster):
    client = cluster_client(cluster.url())
    try:
        assert isinstance(client, RedisCluster)
        assert client.retry.get_retries() == 0
        for tag in ("a", "b", "c"):
            client.lpush(f"{{{tag}}}/events", tag)
        assert [client.rpop(f"{{{tag}}}/events") for tag in "abc"] == [b"a", b"b", b"c"]
        assert is_cluster(cluster.url(), client)
    finally:
        client.close()


def test_a_cluster_nodes_plain_url_is_found_to_be_a_cluster(cluster, redis_server):
    node_url = cluster.masters[1].url
    assert is_cluster(node_url)
    assert not is_cluster(redis_server.url)
    shared = ClientOf("test")
    try:
        client = shared.get(node_url)
        assert isinstance(client, RedisCluster)
        # Its startup node leads to the whole cluster: every tag is reachable.
        for tag in ("a", "b", "c"):
            client.set(f"{{{tag}}}/k", tag)
        assert client.get("{c}/k") == b"c"
        assert not isinstance(shared.get(redis_server.url), RedisCluster)
    finally:
        shared.close()


def test_an_unreachable_cluster_is_unavailable_and_its_password_stays_hidden():
    store = Store(f"redis+cluster://:hunter2@127.0.0.1:{free_port()}")
    try:
        with pytest.raises(RedisUnavailable) as info:
            store.connect()
    finally:
        store.close()
    assert str(info.value).startswith("connecting to redis+cluster://:***@127.0.0.1:")
    assert "hunter2" not in str(info.value)


def test_redis_pys_cross_slot_refusal_is_a_store_error(cluster):
    client = cluster_client(cluster.url())
    try:
        with pytest.raises(StoreError) as info, converted_errors("moving"):
            client.execute_command("RENAME", "{a}/x", "{b}/y")
    finally:
        client.close()
    assert not isinstance(info.value, RedisUnavailable)
    assert str(info.value).startswith("moving: ")
    assert "same key slot" in str(info.value)
