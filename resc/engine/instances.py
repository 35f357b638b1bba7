"""Several resc on one config: each watcher of each process is an instance, with its own
taken list, a heartbeat, and a place in the watcher's registry (the keys are named in
resc.core.keys).

- An instance takes into `<taken_queue>/<id>` only, and commits from it: the commit
  removes each event from that list first, so an event put back by another instance is
  never committed twice (commit.lua answers 'm').
- Its heartbeat `<taken_queue>/<id>/heartbeat` lives `heartbeat_ttl` seconds and is
  refreshed every third of that by a thread of its own. The thread also sweeps: every
  registered instance whose heartbeat has expired has its list put back into the input
  queue by recover.lua, which checks the heartbeat itself, so a live instance is never
  touched however stale the sweeper's view; the events it was processing are counted as
  interrupted, those taken ahead are not.
- The plain `<taken_queue>` of an older resc (one instance per taken queue) or of the
  original program is swept the same way, while no older resc holds its owner key
  `<taken_queue>/owner`: an upgrade loses nothing of what was in hand.
- An instance that finds its heartbeat expired (the process stalled, or Redis was out,
  longer than the time to live) stops taking into its list (take.lua checks the
  heartbeat), puts back what is left in it and starts again under a new id.

Ids: `--instance ID` (or RESC_INSTANCE) or `<host>:<pid>:<random>`; the first
instance of a watcher in a process has that id, the next ones (after a reload restarted
the watcher, or a lost heartbeat) `<id>.1`, `<id>.2`, and so on.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import socket
import threading
import time
from collections import Counter
from pathlib import Path

from resc.config.models import Watcher as WatcherConfig
from resc.core.errors import HeartbeatLost, InstanceIdTaken, RedisUnavailable, StoreError
from resc.core.keys import (
    RESERVED_INSTANCE_IDS,
    instance_heartbeat,
    instance_taken,
    instances,
    taken_owner,
)
from resc.core.logs import get_logger
from resc.engine.store import Recovered, Store

log = get_logger("resc.instances")

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,199}")


def check_instance_id(text: str) -> str:
    """`text` when it can be an instance id; ValueError saying why otherwise."""
    if text in RESERVED_INSTANCE_IDS:
        raise ValueError(f"{text!r} names one of resc's own keys: choose another instance id")
    if not _ID.fullmatch(text):
        raise ValueError(
            f"{text!r} is not an instance id: 1 to 200 letters, digits and . _ : @ + = -, "
            "starting with a letter or digit"
        )
    return text


def default_instance_id() -> str:
    """`<host>:<pid>:<random>`: a restarted process gets a new id."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()) or "host"
    return f"{host.lstrip('._-') or 'host'}:{os.getpid()}:{secrets.token_hex(4)}"


class Identity:
    """The instance ids of one process: one base, and a new one for each instance a
    watcher starts after its first."""

    def __init__(self, base: str | None = None) -> None:
        self.base = check_instance_id(base) if base is not None else default_instance_id()
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.token = secrets.token_hex(8)
        self._started: Counter[str] = Counter()
        self._lock = threading.Lock()

    def next_id(self, taken_queue: str) -> str:
        with self._lock:
            n = self._started[taken_queue]
            self._started[taken_queue] += 1
        return self.base if n == 0 else f"{self.base}.{n}"

    def heartbeat_value(self, ttl_ms: int) -> str:
        return json.dumps(
            {
                "host": self.host,
                "pid": self.pid,
                "ttl_ms": ttl_ms,
                "machine": _MACHINE,
                "token": self.token,
            },
            separators=(",", ":"),
        )


def _machine() -> str:
    """This machine and process namespace (a container), as a short tag, so that a pid
    is only checked where it means the same process; '' when unknown."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""
    return hashlib.sha1(f"{boot}/{namespace}".encode()).hexdigest()[:8]


_MACHINE = _machine()


def dead_here(value: str) -> bool:
    """True when a heartbeat's value is that of a process of this machine and process
    namespace that is gone: its heartbeat need not be waited out."""
    fields = parse_heartbeat(value.encode())
    pid = fields.get("pid")
    if not _MACHINE or fields.get("machine") != _MACHINE or not isinstance(pid, int):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: a process of another user lives with that pid
        return False
    return False


def parse_heartbeat(value: bytes | None) -> dict[str, object]:
    """The fields of a heartbeat's value; {} when it cannot be read."""
    if value is None:
        return {}
    try:
        decoded = json.loads(value)
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


class Membership:
    """One watcher's instance: its id, heartbeat thread and sweep of dead instances."""

    def __init__(
        self,
        url: str,
        config: WatcherConfig,
        identity: Identity,
        heartbeat_ttl_s: float,
        stop: threading.Event,
    ) -> None:
        self.url = url
        self.config = config
        self.identity = identity
        self.ttl_ms = int(heartbeat_ttl_s * 1000)
        self.beat_every_s = heartbeat_ttl_s / 3
        self.stop = stop
        self.id: str | None = None
        self._joined = False  # self.id holds a heartbeat of this process
        self.lost = False  # set by the heartbeat thread: the heartbeat had expired
        self.registry = instances(config.taken_queue)
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        # Interrupted events put back by sweeps, that the watcher has not heard of yet.
        self._interrupted = 0
        self._interrupted_lock = threading.Lock()
        # A sweep moved outbox entries of a dead instance into the watcher's orphaned
        # ones (recover.lua), which the watcher has not replayed yet.
        self._orphans = threading.Event()
        self._log = log.bind(watcher=config.input_queue)

    @property
    def taken_list(self) -> str:
        assert self.id is not None
        return instance_taken(self.config.taken_queue, self.id)

    @property
    def heartbeat(self) -> str:
        assert self.id is not None
        return instance_heartbeat(self.config.taken_queue, self.id)

    def check(self) -> None:
        """HeartbeatLost when the heartbeat thread found the heartbeat expired."""
        if self.lost:
            raise HeartbeatLost(f"{self.heartbeat} expired: this instance starts again")

    def join(self, store: Store) -> bool:
        """Hold a live id, registered with a heartbeat: the same one after a short
        outage, a new one (after putting the old list back) when the heartbeat expired
        meanwhile. False when stopped while waiting for an id held by another process;
        InstanceIdTaken when a live one holds it."""
        value = self.identity.heartbeat_value(self.ttl_ms)
        if self._joined:
            old = self.id
            assert old is not None
            held = store.heartbeat(
                self.heartbeat, self.registry, self.taken_list, old, value, self.ttl_ms, False
            )
            self.lost = False
            if held is True:
                return self._started()
            if held is False:
                # Expired: what is left in the list is this instance's, and nobody
                # processes it now.
                self._leave(store, old, self.config.max_attempts)
            self._log.warning(
                "heartbeat expired (this process stalled or was cut off from Redis for "
                "longer than its time to live): starting again under a new instance id",
                instance=old,
            )
            self._joined = False
            self.id = None
        if self.id is None:
            self.id = self.identity.next_id(self.config.taken_queue)
        if not self._claim(store, value):
            return False
        self._joined = True
        return self._started()

    def _claim(self, store: Store, value: str) -> bool:
        assert self.id is not None
        deadline = 0.0
        seen: tuple[str, int] | None = None
        dead = ""
        while True:
            held = store.heartbeat(
                self.heartbeat,
                self.registry,
                self.taken_list,
                self.id,
                value,
                self.ttl_ms,
                True,
                dead,
            )
            if not isinstance(held, tuple):
                return True
            holder, left_ms = held
            if holder != dead and dead_here(holder):
                dead = holder  # a crashed process of this machine: taken over at once
                continue
            if seen is not None and (holder != seen[0] or left_ms > seen[1]):
                raise InstanceIdTaken(
                    f"instance id {self.id} is used by another live resc "
                    f"({_who(holder)}, it renews {self.heartbeat}): give each resc its own "
                    "--instance, or none"
                )
            if seen is None:
                deadline = time.monotonic() + left_ms / 1000 + 1.0
            if left_ms < 0 or time.monotonic() > deadline:
                raise InstanceIdTaken(
                    f"instance id {self.id}: {self.heartbeat} does not expire; delete it, or "
                    "give this resc another --instance"
                )
            if seen is None:
                self._log.warning(
                    "instance id in use: waiting for its heartbeat to expire (a crashed "
                    "resc) or to be renewed (a live one: this resc stops)",
                    instance=self.id,
                    holder=_who(holder),
                    expires_in_s=left_ms / 1000,
                )
            seen = held
            if self.stop.wait(min(0.5, self.beat_every_s)):
                return False

    def _started(self) -> bool:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._beat, name=f"heartbeat {self.config.input_queue}", daemon=True
            )
            self._thread.start()
        return True

    def _leave(self, store: Store, instance: str, max_attempts: int) -> None:
        cfg = self.config
        recovered = store.recover(
            cfg.input_queue,
            instance_taken(cfg.taken_queue, instance),
            cfg.failed_queue,
            max_attempts,
            attempts_of=cfg.taken_queue,
            liveness=instance_heartbeat(cfg.taken_queue, instance),
            registry=self.registry,
            leaving=instance,
        )
        if recovered is not None and recovered.entries:
            self._orphans.set()
        if recovered is not None and (recovered.back or recovered.failed):
            self._log.warning(
                "put back the events of this instance's taken list",
                instance=instance,
                put_back=recovered.back,
                failed=recovered.failed,
            )

    def interrupted(self) -> int:
        """How many interrupted events the sweeps put back since the last call: they
        are first in the input queue, and the watcher takes them one at a time."""
        if not self._interrupted:
            return 0  # the usual answer, without the lock (a sweep's count waits a call)
        with self._interrupted_lock:
            n, self._interrupted = self._interrupted, 0
        return n

    def orphaned(self) -> bool:
        """Whether outbox entries were orphaned since the last call (the watcher then
        replays the watcher's orphaned entries)."""
        if not self._orphans.is_set():
            return False
        self._orphans.clear()
        return True

    def _count(self, recovered: Recovered | None) -> int:
        if recovered is None:
            return 0
        if recovered.entries:
            self._orphans.set()
        with self._interrupted_lock:
            self._interrupted += recovered.interrupted
        return recovered.back + recovered.failed

    def sweep(self, store: Store) -> int:
        """Put back the taken lists of the dead instances (and an older resc's plain taken
        queue when no older resc holds it); the number of events put back or failed."""
        cfg = self.config
        others = [i for i in store.members(self.registry) if i != self.id]
        beats = [instance_heartbeat(cfg.taken_queue, i) for i in others]
        values = store.values(beats) if beats else []
        moved = 0
        for instance, value in zip(others, values, strict=True):
            dead_value = ""
            if value is not None:
                if not dead_here(value):
                    continue
                dead_value = value  # its process is gone from this machine
            recovered = store.recover(
                cfg.input_queue,
                instance_taken(cfg.taken_queue, instance),
                cfg.failed_queue,
                cfg.max_attempts,
                attempts_of=cfg.taken_queue,
                liveness=instance_heartbeat(cfg.taken_queue, instance),
                registry=self.registry,
                leaving=instance,
                only_if_dead=True,
                dead_value=dead_value,
            )
            if self._count(recovered):
                assert recovered is not None
                moved += recovered.back + recovered.failed
                self._log.warning(
                    "recovered the events of a dead instance",
                    instance=instance,
                    put_back=recovered.back,
                    failed=recovered.failed,
                    interrupted=recovered.interrupted,
                )
        if store.lengths([cfg.taken_queue])[0]:
            recovered = store.recover(
                cfg.input_queue,
                cfg.taken_queue,
                cfg.failed_queue,
                cfg.max_attempts,
                liveness=taken_owner(cfg.taken_queue),
                registry=self.registry,
                only_if_dead=True,
            )
            if self._count(recovered):
                assert recovered is not None
                moved += recovered.back + recovered.failed
                self._log.warning(
                    "recovered the events left in the plain taken queue (by an older resc)",
                    taken_queue=cfg.taken_queue,
                    put_back=recovered.back,
                    failed=recovered.failed,
                )
        return moved

    def _beat(self) -> None:
        store = Store(self.url)
        connected = False
        value = self.identity.heartbeat_value(self.ttl_ms)
        refused = ""  # the last refused command's error, logged once
        try:
            # The watcher joined and swept just now.
            while not self._done.wait(self.beat_every_s):
                try:
                    if not connected:
                        store.connect()
                        connected = True
                    instance = self.id
                    if instance is not None and self._joined and not self.lost:
                        held = store.heartbeat(
                            instance_heartbeat(self.config.taken_queue, instance),
                            self.registry,
                            instance_taken(self.config.taken_queue, instance),
                            instance,
                            value,
                            self.ttl_ms,
                            False,
                        )
                        # The watcher may have moved to a new id meanwhile.
                        if held is not True and instance == self.id:
                            self.lost = True
                    self.sweep(store)
                except StoreError as exc:
                    connected = False
                    # The watcher logs an outage; a refused command is its own.
                    if isinstance(exc, RedisUnavailable):
                        self._log.debug("heartbeat not refreshed", error=str(exc))
                    elif str(exc) != refused:
                        self._log.error("sweep of dead instances failed, retrying", error=str(exc))
                    refused = "" if isinstance(exc, RedisUnavailable) else str(exc)
                else:
                    refused = ""
        finally:
            store.close()

    def release(self, store: Store | None) -> None:
        """Stop the heartbeat; with a `store`, leave: what is left in the list goes back
        to the input queue, uncounted, and the id is forgotten."""
        self._done.set()
        if self._thread is not None:
            self._thread.join(1.0)  # longer only when Redis hangs: the heartbeat expires
        if store is None or self.id is None or not self._joined:
            return
        try:
            self._leave(store, self.id, 0)
        except StoreError as exc:
            self._log.debug("instance not unregistered: its heartbeat expires", error=str(exc))


def _who(heartbeat: str) -> str:
    fields = parse_heartbeat(heartbeat.encode())
    return f"host {fields.get('host', '?')}, pid {fields.get('pid', '?')}"
