"""The threads that process a watcher's events when they may wait (fetches) or run side
by side (concurrency above 1).

Daemon threads, unlike those of concurrent.futures' executors, which Python joins at
exit: a fetch that a stop abandons must not keep the process alive past its grace
period.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, wait
from queue import SimpleQueue
from typing import Any, TypeVar

T = TypeVar("T")

# How often a wait for jobs looks at the deadline, which a stop may set at any time.
_POLL_S = 0.1


class Pool:
    """Up to `size` daemon threads, started as jobs need them."""

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._jobs: SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []

    def submit(self, job: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        self._jobs.put((future, job))
        if not self._idle.acquire(blocking=False) and len(self._threads) < self._size:
            thread = threading.Thread(
                target=self._work, name=f"{self._name} {len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return future

    def run_until(
        self, jobs: Sequence[Callable[[], T]], deadline: Callable[[], float | None]
    ) -> list[Future[T]]:
        """Run the jobs; return once all are done, or once `deadline()` (a time.monotonic()
        value, or None for no deadline) has passed. Jobs not started by then are
        cancelled; the ones running are abandoned: their futures are not done."""
        futures = [self.submit(job) for job in jobs]
        while True:
            _, pending = wait(futures, timeout=_POLL_S)
            if not pending:
                return futures
            limit = deadline()
            if limit is not None and time.monotonic() >= limit:
                for future in pending:
                    future.cancel()
                return futures

    def shutdown(self) -> None:
        """Let the threads end once the jobs they run are done."""
        for _ in self._threads:
            self._jobs.put(None)

    def _work(self) -> None:
        while (item := self._jobs.get()) is not None:
            future, job = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(job())
                except BaseException as exc:
                    future.set_exception(exc)
            del item, future, job  # a finished job's result is not kept alive while idle
            self._idle.release()
