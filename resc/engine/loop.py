"""The event loop on which a watcher's events are processed when its rules fetch: one
daemon thread per watcher, uvloop when installed.

One thread per watcher, not one per process: a watcher's fetches then never wait behind
another watcher's Python work, its loop ends with it (a reload that restarts one watcher
leaves the others' fetches alone), and the watcher's thread and its loop share nothing
but the events handed over and their outcomes. A daemon thread, as in resc.engine.pool:
a fetch that a stop abandons must not keep the process alive.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# How long close() waits for the loop's last coroutine (closing connections).
_CLOSE_S = 2.0


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class LoopThread:
    """An event loop running in a daemon thread of its own."""

    def __init__(self, name: str) -> None:
        self.loop = new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run `coroutine` on the loop; its future's cancel() cancels it there."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def close(self, last: Coroutine[Any, Any, None] | None = None) -> None:
        """Run `last` (closing connections), cancel what still runs, stop the loop."""
        if last is not None:
            # Closing connections: a failure leaves nothing to do.
            with contextlib.suppress(Exception):
                self.submit(last).result(_CLOSE_S)

        def stop() -> None:
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
            self.loop.stop()

        self.loop.call_soon_threadsafe(stop)
        self._thread.join(_CLOSE_S)
