"""One resc at a time on a taken queue: the owner key `<taken_queue>/owner`.

A watcher claims the key (resc.core.keys.taken_owner) before it recovers its taken
queue, a thread renews it every RENEW_EVERY_S, and a clean stop deletes it. The key
lives OWNER_TTL_S, so the key of a resc that crashed goes away by itself.

A watcher that finds the key held by another instance waits until it knows which case
it is in: the holder renews it (alive: QueueHeld, resc refuses to start), or the key
expires (crashed: claimed). A holder that ran on this machine and whose process is gone
is known to be dead at once. The wait is at most OWNER_TTL_S and a little more.

The value is `<host>:<pid>:<machine>.<random>`: `machine` tells this machine (boot id)
and process namespace (a container) from another, so that the pid is only checked where
it means the same process; `random` tells a restarted process with the same pid apart.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import threading
import time
from collections import Counter
from pathlib import Path

from resc.core.errors import RescError, StoreError
from resc.core.keys import taken_owner
from resc.core.logs import get_logger
from resc.engine.store import Store

log = get_logger("resc.owner")

OWNER_TTL_S = 10.0
RENEW_EVERY_S = 2.5
# How often a waiting watcher looks at the key of a holder that may be dead.
_LOOK_EVERY_S = 0.5


def _machine() -> str:
    """This machine and process namespace, as a short tag; '' when unknown."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""
    return hashlib.sha1(f"{boot}/{namespace}".encode()).hexdigest()[:8]


_HOST = socket.gethostname()
_MACHINE = _machine()
INSTANCE = f"{_HOST}:{os.getpid()}:{_MACHINE}.{secrets.token_hex(4)}"

# Watchers of this process holding each (Redis URL, owner key): after a reload, the old
# watcher of a queue may finish after its successor started, and must not delete the key
# its successor holds.
_holders: Counter[tuple[str, str]] = Counter()
_holders_lock = threading.Lock()


class QueueHeld(RescError):
    """Another live resc instance holds the taken queue."""

    def __init__(self, taken_queue: str, holder: str, why: str) -> None:
        super().__init__(
            f"{taken_queue} is held by another resc ({holder}, {why}): a second resc on the "
            "same queues would take the events in its hands; stop it first, or give this "
            "one other queues"
        )


def _dead_here(holder: str) -> bool:
    """True when `holder` ran on this machine, in this process namespace, and its process
    is gone (or is this process, which has another id)."""
    host, _, rest = holder.partition(":")
    pid_text, _, tag = rest.partition(":")
    if not _MACHINE or host != _HOST or tag.partition(".")[0] != _MACHINE:
        return False
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: a process of another user lives with that pid
        return False
    return False


class Ownership:
    """The owner key of one watcher's taken queue."""

    def __init__(
        self, url: str, taken_queue: str, stop: threading.Event, instance: str = INSTANCE
    ) -> None:
        self.url = url
        self.taken_queue = taken_queue
        self.key = taken_owner(taken_queue)
        self.instance = instance
        self.stop = stop
        self.lost: str | None = None  # set by the renewing thread: who holds it now
        self._held = False
        self._done = threading.Event()
        self._renewer: threading.Thread | None = None

    def claim(self, store: Store) -> bool:
        """Hold the key (also when already held): True; False when stopped while waiting
        for a holder that may be dead. QueueHeld when a live instance holds it."""
        ttl_ms = int(OWNER_TTL_S * 1000)
        deadline = time.monotonic() + OWNER_TTL_S + RENEW_EVERY_S
        dead = ""
        seen: tuple[str, int] | None = None
        while True:
            held = store.claim_owner(self.key, self.instance, ttl_ms, dead)
            if held is None:
                break
            holder, left_ms = held
            if _dead_here(holder) and holder != dead:
                dead = holder
                continue
            if seen is not None and (holder != seen[0] or left_ms > seen[1]):
                raise QueueHeld(self.taken_queue, holder, "it renews its claim")
            if left_ms < 0 or time.monotonic() > deadline:
                raise QueueHeld(self.taken_queue, holder, f"its key {self.key} does not expire")
            if seen is None:
                log.warning(
                    "taken queue held by another resc: waiting for it to renew its claim "
                    "(alive: this resc stops) or for the claim to expire (crashed)",
                    taken_queue=self.taken_queue,
                    holder=holder,
                    expires_in_s=left_ms / 1000,
                )
            seen = held
            if self.stop.wait(_LOOK_EVERY_S):
                return False
        if not self._held:
            self._held = True
            with _holders_lock:
                _holders[self.url, self.key] += 1
        if self._renewer is None:
            self._renewer = threading.Thread(
                target=self._renew, name=f"owner {self.taken_queue}", daemon=True
            )
            self._renewer.start()
        return True

    def check(self) -> None:
        """QueueHeld when another instance took the key over (this one lost Redis for
        longer than the time to live)."""
        if self.lost is not None:
            raise QueueHeld(self.taken_queue, self.lost, "it took over this one's claim")

    def _renew(self) -> None:
        store = Store(self.url)
        connected = False
        try:
            while not self._done.wait(RENEW_EVERY_S):
                try:
                    if not connected:
                        store.connect()
                        connected = True
                    held = store.claim_owner(self.key, self.instance, int(OWNER_TTL_S * 1000))
                except StoreError as exc:
                    connected = False  # the watcher logs the outage
                    log.debug("owner key not renewed", key=self.key, error=str(exc))
                    continue
                if held is not None:
                    self.lost = held[0]
                    return
        finally:
            store.close()

    def release(self) -> None:
        """Stop renewing; delete the key unless another watcher of this process holds it."""
        self._done.set()
        if self._renewer is not None:
            self._renewer.join(1.0)  # longer only when Redis hangs: the key expires then
        if not self._held:
            return
        self._held = False
        with _holders_lock:
            _holders[self.url, self.key] -= 1
            last = _holders[self.url, self.key] <= 0
            if last:
                del _holders[self.url, self.key]
        if not last or self.lost is not None:
            return
        store = Store(self.url)
        try:
            store.connect()
            store.claim_owner(self.key, self.instance, 0)
        except StoreError as exc:
            log.debug("owner key not released: it expires", key=self.key, error=str(exc))
        finally:
            store.close()
