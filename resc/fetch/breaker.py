"""Circuit breaking: a web service that keeps failing is left alone for a while.

One breaker per fetch of a rule, per watcher. After `failures` consecutive failed
fetches (each after its retries), the circuit opens for `cooldown` seconds: the events
needing that fetch fail at once, with the reason "circuit open after N consecutive
failures of <url>, retrying after <time>", and no request is sent. Then it is half-open:
the next fetch is one trial request (without retries); if the service answers, the
circuit closes, otherwise it opens for another cool-down.

Events are failed rather than held: holding them would stall the watcher, and its
other rules, for as long as the service is down, and an event held in memory is what
a crash loses track of. Failed events keep their reason in the failed queue, and
`resc replay` puts them back in their input queue once the service is back.

Only failures that retrying could have cured count (no connection, timeouts, HTTP 429
and 5xx): a service that answers 404 or bad JSON is up, and such an answer resets the
count.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from resc.core.errors import FetchError
from resc.core.logs import get_logger

log = get_logger("resc.fetch")


class CircuitOpen(FetchError):
    """The fetch was not attempted: its circuit is open."""


class CircuitBreaker:
    """The state of one fetch's circuit; safe to share between threads."""

    def __init__(
        self,
        name: str,
        failures: int,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name  # the fetch's URL pattern: no event values, no secrets
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until: float | None = None  # None while closed
        self._trial_running = False

    def admit(self) -> bool:
        """Whether a fetch may go ahead: False for a normal fetch, True for the trial
        request of a half-open circuit. Raises CircuitOpen while the circuit is open (or
        while another thread's trial is under way)."""
        with self._lock:
            if self._open_until is None:
                return False
            now = self._clock()
            if now < self._open_until or self._trial_running:
                raise CircuitOpen(
                    f"circuit open after {self._failures} consecutive failures of "
                    f"{self.name}, retrying after {self._wall_time(self._open_until, now)}"
                )
            self._trial_running = True
            return True

    def answered(self, trial: bool) -> None:
        """The service answered (whatever the answer): reset the count, close the circuit.
        A fetch that started before the circuit opened and answered since closes it too."""
        with self._lock:
            self._failures = 0
            if trial:
                self._trial_running = False
            if self._open_until is not None:
                self._open_until = None
                log.info("circuit closed: the web service answers again", url=self.name)

    def failed(self, trial: bool, error: str) -> None:
        """The fetch failed after its retries: count it, and open the circuit at the
        threshold or after a failed trial."""
        with self._lock:
            self._failures += 1
            now = self._clock()
            if trial:
                self._trial_running = False
                self._open_until = now + self.cooldown_s
                log.debug(
                    "circuit open again: the trial request failed",
                    url=self.name,
                    cooldown_s=self.cooldown_s,
                    error=error,
                )
            elif self._open_until is None and self._failures >= self.threshold:
                self._open_until = now + self.cooldown_s
                log.warning(
                    "circuit open: events needing this fetch fail at once until the cool-down ends",
                    url=self.name,
                    failures=self._failures,
                    cooldown_s=self.cooldown_s,
                    error=error,
                )

    def abandoned(self, trial: bool) -> None:
        """The fetch ended without telling anything about the service (resc stopping)."""
        if trial:
            with self._lock:
                self._trial_running = False

    @staticmethod
    def _wall_time(deadline: float, now: float) -> str:
        at = datetime.now().astimezone() + timedelta(seconds=deadline - now)
        return at.isoformat(timespec="milliseconds")
