"""Which server is the master: the sentinels' answer, asked when a connection is made and
again every CHECK_EVERY_S by a thread, so that a connection to a master that the
sentinels replaced is dropped before it commits much into it.

A master demoted by a planned failover keeps answering as a master for some seconds
(until the sentinels reconfigure it): only the sentinels know it is no longer the one.
Each sentinel is asked for the master's address and its config epoch; the answer of the
highest epoch wins (a failover raises the epoch, and needs a majority of the sentinels),
so a sentinel that has not heard of the failover yet is outvoted at once.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from resc.config.redis_url import ClusterUrl, SentinelUrl
from resc.core.logs import get_logger

log = get_logger("resc.sentinel")

Address = tuple[str, int]

CHECK_EVERY_S = 0.5
# A sentinel answers from memory: longer than this is a sentinel in trouble.
SENTINEL_TIMEOUT_S = 0.5
# A sentinel that did not answer is asked again only after this many checks.
_SKIP_AFTER_FAILURE = 4


class NoMaster(redis.ConnectionError):
    """No sentinel names a master that is up (a failover under way, or none reachable)."""


def master_of(answers: Sequence[tuple[int, Address]]) -> Address | None:
    """The master in the sentinels' answers (config epoch, address): the address of the
    highest epoch, and among those the one most sentinels give."""
    if not answers:
        return None
    top = max(epoch for epoch, _ in answers)
    addresses = [address for epoch, address in answers if epoch == top]
    return max(addresses, key=addresses.count)


class MasterTracker:
    """The master of one group of sentinels, as they see it now."""

    def __init__(self, url: SentinelUrl) -> None:
        self.url = url
        self.name = url.master_name
        self._clients = [
            redis.Redis(
                host=host,
                port=port,
                username=url.sentinel_username,
                password=url.sentinel_password,
                socket_timeout=SENTINEL_TIMEOUT_S,
                socket_connect_timeout=SENTINEL_TIMEOUT_S,
                retry=Retry(NoBackoff(), 0),
                decode_responses=True,
                **tls_arguments(url),
            )
            for host, port in url.sentinels
        ]
        self._skip = [0] * len(self._clients)
        self._lock = threading.Lock()
        self._master: Address | None = None
        # The open pools of connections to this master: the thread checks while any is.
        self._pools: weakref.WeakSet[object] = weakref.WeakSet()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = False

    def resolve(self) -> Address:
        """Ask the sentinels now; NoMaster when none names a master that is up."""
        master = self._ask(skip_failed=False)
        if master is None:
            raise NoMaster(f"no sentinel names a master for {self.name!r} that is up now")
        return master

    def attach(self, pool: object) -> None:
        """Check the sentinels while `pool` is open (until detach() or its end)."""
        if pool in self._pools:
            return
        with self._lock:
            self._pools.add(pool)
            if self._thread is None:
                self._stopped.clear()
                self._thread = threading.Thread(
                    target=self._check, name=f"sentinels of {self.name}", daemon=True
                )
                self._thread.start()

    def detach(self, pool: object) -> None:
        with self._lock:
            self._pools.discard(pool)
            if not self._pools:
                self._stopped.set()

    def current(self) -> Address | None:
        """The master as last seen (no network)."""
        return self._master

    def _check(self) -> None:
        while True:
            self._stopped.wait(CHECK_EVERY_S)  # set by the last detach(): end at once
            with self._lock:
                if not self._pools:
                    self._thread = None
                    return
                self._stopped.clear()
            before = self._master
            master = self._ask(skip_failed=True)
            if master is not None and before is not None and master != before:
                log.warning(
                    "the sentinels name a new master: connections to the old one are dropped",
                    master_name=self.name,
                    old=_shown(before),
                    new=_shown(master),
                )

    def _ask(self, skip_failed: bool) -> Address | None:
        answers: list[tuple[int, Address]] = []
        for i, client in enumerate(self._clients):
            if skip_failed and self._skip[i]:
                self._skip[i] -= 1
                continue
            try:
                state: Any = client.sentinel_master(self.name)
            except redis.RedisError as exc:
                self._skip[i] = _SKIP_AFTER_FAILURE
                log.debug("a sentinel did not answer", master_name=self.name, error=str(exc))
                continue
            if state.get("is_master") and not (state.get("is_sdown") or state.get("is_odown")):
                answers.append(
                    (int(state.get("config-epoch", 0)), (state["ip"], int(state["port"])))
                )
        master = master_of(answers)
        if master is not None:
            self._master = master
            self._warned = False
        elif not self._warned:
            self._warned = True
            log.warning("no sentinel names a master that is up", master_name=self.name)
        return master


def tls_arguments(url: SentinelUrl | ClusterUrl) -> dict[str, Any]:
    """redis-py's connection arguments for the URL's TLS options (none without TLS)."""
    if not url.tls:
        return {}
    options = dict(url.tls_options)
    return {"ssl": True, **options}


def _shown(address: Address) -> str:
    return f"{address[0]}:{address[1]}"


_trackers: dict[SentinelUrl, MasterTracker] = {}
_trackers_lock = threading.Lock()


def tracker_for(url: SentinelUrl) -> MasterTracker:
    """The process's one tracker of these sentinels and master name."""
    with _trackers_lock:
        tracker = _trackers.get(url)
        if tracker is None:
            tracker = _trackers[url] = MasterTracker(url)
        return tracker
