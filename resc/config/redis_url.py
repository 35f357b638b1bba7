"""The Redis URLs resc accepts, parsed in one place: redis://, rediss:// and unix:// (a
server), redis+sentinel:// or rediss+sentinel:// (the master that sentinels name), and
redis+cluster:// or rediss+cluster:// (a Redis Cluster).

    redis+sentinel://[[user]:password@]host:port[,host:port...]/MASTER_NAME[/DB]
        [?sentinel_password=...&sentinel_username=...]

The user and password are the master's (and its replicas'); sentinels that have a
password of their own get `sentinel_password`, the others none. A port left out is
26379. rediss+sentinel:// speaks TLS to the sentinels and to the master, with the
ssl_* query parameters of rediss://.

    redis+cluster://[[user]:password@]host:port[,host:port...][/0][?ssl_...]

names a Redis Cluster by some of its nodes (the startup nodes; a port left out is
6379). A cluster has database 0 only. rediss+cluster:// speaks TLS to every node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

SERVER_SCHEMES = ("redis://", "rediss://", "unix://")
SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
SENTINEL_PORT = 26379
CLUSTER_PORT = 6379
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
_CERT_REQS = ("none", "optional", "required")
_HOST = re.compile(r"[A-Za-z0-9.\-_]+|\[[0-9A-Fa-f:.]+\]")
_MASTER_NAME = re.compile(r"[^\s/\x00-\x1f\x7f]+")


@dataclass(frozen=True, slots=True)
class ServerUrl:
    """A URL naming one server, which redis-py's from_url reads as it is."""

    url: str


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    """A URL naming the master that a group of sentinels monitors."""

    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    tls: bool = False
    tls_options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ClusterUrl:
    """A URL naming a Redis Cluster by some of its nodes."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    tls: bool = False
    tls_options: tuple[tuple[str, str], ...] = ()


def is_sentinel_url(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEMES)


def is_cluster_url(url: str) -> bool:
    """Whether the URL says it names a cluster (redis+cluster://, rediss+cluster://). A
    plain redis:// URL may name a cluster node too: resc.connection.clients.is_cluster
    asks the server."""
    return url.startswith(CLUSTER_SCHEMES)


def parse_redis_url(url: str) -> ServerUrl | SentinelUrl | ClusterUrl:
    """The URL's parts; ValueError saying what is wrong (never quoting the URL, which
    may hold a password)."""
    if is_sentinel_url(url):
        return _parse_sentinel_url(url)
    if is_cluster_url(url):
        return _parse_cluster_url(url)
    if not url.startswith(SERVER_SCHEMES):
        raise ValueError(
            "must start with redis://, rediss://, unix://, redis+sentinel://, "
            "rediss+sentinel://, redis+cluster:// or rediss+cluster://"
        )
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        raise ValueError("the port must be a number from 0 to 65535") from None
    db = parts.path.strip("/") if parts.scheme != "unix" else ""
    query_db = dict(parse_qsl(parts.query)).get("db", "0")
    if not (db or "0").isdigit() or not query_db.isdigit():
        raise ValueError("the database must be a number: redis://host:6379/0")
    return ServerUrl(url)


def _parse_sentinel_url(url: str) -> SentinelUrl:
    scheme, _, rest = url.partition("://")
    if "#" in rest:
        raise ValueError("a sentinel URL has no #fragment")
    rest, _, query = rest.partition("?")
    # The user part runs to the last `@`: a password may hold `@`, `:` or `/` as typed.
    at = rest.rfind("@")
    userinfo, rest = (rest[:at], rest[at + 1 :]) if at >= 0 else (None, rest)
    hosts, slash, path = rest.partition("/")
    if not slash or not path.strip("/"):
        raise ValueError(
            "names no master: redis+sentinel://host:26379[,host:port...]/MASTER_NAME[/DB]"
        )
    sentinels = tuple(_sentinel_address(part) for part in hosts.split(","))
    segments = path.rstrip("/").split("/")
    if len(segments) > 2:
        raise ValueError("has more than /MASTER_NAME/DB after the sentinels")
    master_name = unquote(segments[0])
    if not _MASTER_NAME.fullmatch(master_name):
        raise ValueError("the master name must not be empty nor hold spaces or control characters")
    db_text = segments[1] if len(segments) == 2 else "0"
    if not db_text.isascii() or not db_text.isdigit():
        raise ValueError("the database must be a number: redis+sentinel://host:26379/mymaster/0")
    username = password = None
    if userinfo is not None:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
        if not colon:
            raise ValueError("the part before @ must be [user]:password")
    options = _query(query, tls=scheme == "rediss+sentinel")
    return SentinelUrl(
        sentinels=sentinels,
        master_name=master_name,
        db=int(db_text),
        username=username,
        password=password,
        sentinel_username=options.pop("sentinel_username", None),
        sentinel_password=options.pop("sentinel_password", None),
        tls=scheme == "rediss+sentinel",
        tls_options=tuple(sorted(options.items())),
    )


def _parse_cluster_url(url: str) -> ClusterUrl:
    scheme, _, rest = url.partition("://")
    if "#" in rest:
        raise ValueError("a cluster URL has no #fragment")
    rest, _, query = rest.partition("?")
    at = rest.rfind("@")
    userinfo, rest = (rest[:at], rest[at + 1 :]) if at >= 0 else (None, rest)
    hosts, _, path = rest.partition("/")
    if path.strip("/") not in ("", "0"):
        raise ValueError("a cluster has database 0 only: redis+cluster://host:6379[,host:port...]")
    nodes = tuple(_address(part, "node", CLUSTER_PORT) for part in hosts.split(","))
    username = password = None
    if userinfo is not None:
        user, colon, secret = userinfo.partition(":")
        if not colon:
            raise ValueError("the part before @ must be [user]:password")
        username = unquote(user) or None
        password = unquote(secret)
    tls = scheme == "rediss+cluster"
    options = _query(query, tls=tls, allowed=())
    return ClusterUrl(
        nodes=nodes,
        username=username,
        password=password,
        tls=tls,
        tls_options=tuple(sorted(options.items())),
    )


def _sentinel_address(text: str) -> tuple[str, int]:
    return _address(text, "sentinel", SENTINEL_PORT)


def _address(text: str, what: str, default_port: int) -> tuple[str, int]:
    if not text:
        raise ValueError(f"names an empty {what} address: write host:port,host:port")
    if text.startswith("["):
        host, bracket, port_text = text.partition("]")
        host, port_text = host + bracket, port_text.removeprefix(":")
    else:
        host, _, port_text = text.partition(":")
    if not _HOST.fullmatch(host):
        raise ValueError(f"a {what}'s host must be a name or an IP address: host:port")
    port = default_port
    if port_text:
        if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"a {what}'s port must be a number from 1 to 65535")
        port = int(port_text)
    return host.strip("[]"), port


def _query(
    query: str, tls: bool, allowed: tuple[str, ...] = ("sentinel_password", "sentinel_username")
) -> dict[str, str]:
    allowed = (*allowed, *(_TLS_OPTIONS if tls else ()))
    options: dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ValueError("the query must be name=value pairs joined by &") from None
    for name, value in pairs:
        if name not in allowed:
            known = ", ".join(allowed) or "none"
            raise ValueError(f"unknown query parameter {name[:40]!r} (known: {known})")
        if name in options:
            raise ValueError(f"the query parameter {name} is given twice")
        options[name] = value
    if options.get("ssl_cert_reqs", "required") not in _CERT_REQS:
        raise ValueError(f"ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}")
    return options
