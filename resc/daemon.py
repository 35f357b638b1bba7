"""The daemon: one thread per watcher, signals, and an orderly stop."""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType

from resc.config import Config
from resc.errors import EXIT_FATAL, EXIT_FORCED, EXIT_OK
from resc.logs import get_logger
from resc.store import redact_url
from resc.watcher import Watcher

log = get_logger("resc.daemon")

GRACE_PERIOD_S = 10.0


class Daemon:
    def __init__(self, config: Config, grace_period_s: float = GRACE_PERIOD_S) -> None:
        self.config = config
        self.grace_period_s = grace_period_s
        self.stop = threading.Event()
        self.failed: list[str] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for watcher_config in self.config.watchers:
            watcher = Watcher(watcher_config, self.config, self.stop)
            thread = threading.Thread(
                target=self._run_watcher,
                args=(watcher,),
                name=f"watcher {watcher_config.input_queue}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()
        log.info(
            "resc started", redis=redact_url(self.config.redis.url), watchers=len(self._threads)
        )

    def _run_watcher(self, watcher: Watcher) -> None:
        try:
            watcher.run()
        except Exception:
            log.exception("watcher crashed: stopping resc", watcher=watcher.config.input_queue)
            self.failed.append(watcher.config.input_queue)
            self.stop.set()

    def wait(self) -> int:
        """Block until stopped; then give watchers the grace period to finish the events
        in hand. Returns the exit status."""
        while not self.stop.wait(0.5):
            pass
        deadline = time.monotonic() + self.grace_period_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        unfinished = [t.name for t in self._threads if t.is_alive()]
        if unfinished:
            log.warning(
                "grace period over: unfinished events stay in their taken queue "
                "and are processed at the next start",
                watchers=", ".join(unfinished),
            )
        if self.failed:
            return EXIT_FATAL
        log.info("resc stopped")
        return EXIT_OK

    def install_signal_handlers(self) -> None:
        def on_signal(signum: int, _: FrameType | None) -> None:
            if self.stop.is_set():
                log.warning("second signal: exiting now", signal=signal.Signals(signum).name)
                os._exit(EXIT_FORCED)
            log.info("stopping: finishing the events in hand", signal=signal.Signals(signum).name)
            self.stop.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)


def run(config: Config) -> int:
    daemon = Daemon(config)
    daemon.install_signal_handlers()
    daemon.start()
    return daemon.wait()
