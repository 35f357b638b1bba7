"""A watcher: the loop that takes events from one input queue, applies the rules, and
commits each batch of outcomes atomically."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from resc.config import Config
from resc.config import Watcher as WatcherConfig
from resc.errors import EventError, StoreError
from resc.fetch import Fetcher
from resc.keys import failed_reasons
from resc.logs import get_logger
from resc.rules import RuleSet
from resc.store import CommitReport, Outcome, Reply, Store

log = get_logger("resc.watcher")

RECONNECT_DELAYS_S = (0.1, 0.5, 1.0, 2.0, 5.0)


class Watcher:
    """Processes the events of one input queue until `stop` is set."""

    def __init__(
        self,
        config: WatcherConfig,
        settings: Config,
        stop: threading.Event,
        store: Store | None = None,
        fetcher: Fetcher | None = None,
    ) -> None:
        self.config = config
        self.listener_channel = settings.listener_channel
        self.stop = stop
        self.store = store or Store(settings.redis.url)
        self.fetch = fetcher or Fetcher()
        self.log = log.bind(watcher=config.input_queue)
        self.rules = RuleSet(config.rules)

    def run(self) -> None:
        """The watcher's loop; returns when `stop` is set. Redis errors are waited out."""
        connected = False
        failures = 0
        try:
            while not self.stop.is_set():
                try:
                    if not connected:
                        self._start()
                        connected = True
                        if failures:
                            self.log.info("Redis is back", url=self.store.display_url)
                        failures = 0
                    self._pump()
                except StoreError as exc:
                    # After any Redis error nothing held in memory is trusted: the next
                    # connection starts by recovering the taken queue.
                    connected = False
                    delay = RECONNECT_DELAYS_S[min(failures, len(RECONNECT_DELAYS_S) - 1)]
                    if failures == 0:
                        self.log.warning("Redis unavailable, retrying", error=str(exc))
                    else:
                        self.log.debug("Redis still unavailable", error=str(exc), retry_in_s=delay)
                    failures += 1
                    self.stop.wait(delay)
        finally:
            self.fetch.close()
            self.store.close()

    def _start(self) -> None:
        self.store.connect()
        moved = self.store.recover(self.config.input_queue, self.config.taken_queue)
        if moved:
            self.log.warning(
                "recovered unfinished events", count=moved, taken_queue=self.config.taken_queue
            )

    def _pump(self) -> None:
        """Take, process and commit batches until the input queue is empty or resc stops.

        Python and Redis work side by side: the next batch is taken while this one is
        processed, and this one is committed while the next one is processed. The
        commits go out in order on one connection, each atomic on its own.
        """
        cfg, store = self.config, self.store
        first = store.wait_take(cfg.input_queue, cfg.taken_queue)
        if first is None:
            return
        events = [first]
        committing: tuple[list[Outcome], Reply[CommitReport]] | None = None
        while True:
            next_events = store.send_take(cfg.input_queue, cfg.taken_queue, cfg.batch)
            outcomes = self._process(events)
            if committing is not None:
                self._log_report(committing[0], committing[1].get())
            committing = (
                outcomes,
                store.send_commit(
                    cfg.taken_queue, cfg.failed_queue, outcomes, self.listener_channel
                ),
            )
            events = next_events.get()
            if not events or self.stop.is_set():
                break
        self._log_report(committing[0], committing[1].get())
        if self.stop.is_set():
            # Taken ahead but not processed: back to the input queue, in order.
            store.recover(cfg.input_queue, cfg.taken_queue)

    def _process(self, events: Sequence[bytes]) -> list[Outcome]:
        info = self.log.isEnabledFor(logging.INFO)
        apply, fetch, stop = self.rules.apply, self.fetch, self.stop
        outcomes: list[Outcome] = []
        for event in events:
            if stop.is_set() and outcomes:
                break  # the rest goes back to the input queue (see _pump)
            if info:
                self.log.info("event taken", input_task=event)
            try:
                event.decode("utf-8")
            except UnicodeDecodeError as exc:
                outcomes.append(Outcome(event, failure=f"event is not UTF-8 text: {exc}"))
                continue
            try:
                outcomes.append(Outcome(event, apply(event, fetch)))
            except EventError as exc:
                outcomes.append(Outcome(event, failure=str(exc)))
            except Exception as exc:
                self.log.exception("unexpected error processing an event", input_task=event)
                outcomes.append(Outcome(event, failure=f"internal error: {exc!r}"))
        return outcomes

    def _log_report(self, outcomes: Sequence[Outcome], report: CommitReport) -> None:
        info = self.log.isEnabledFor(logging.INFO)
        if not info and "m" not in report.status and "f" not in report.status:
            return
        for i, (outcome, status) in enumerate(zip(outcomes, report.status, strict=True)):
            if status == "m":
                self.log.warning(
                    "event no longer in the taken queue: not committed, it will be "
                    "processed again (is another resc watching this queue?)",
                    input_task=outcome.event,
                )
            elif status == "f":
                self.log.warning(
                    "event failed",
                    input_task=outcome.event,
                    reason=report.failures.get(i, outcome.failure),
                    failed_queue=self.config.failed_queue,
                    reasons=failed_reasons(self.config.failed_queue),
                )
            elif info:
                for result, pushed in zip(outcome.results, report.pushed[i], strict=True):
                    self.log.info(
                        "task pushed" if pushed else "task already in set",
                        task=result.task,
                        queue=result.queue,
                        rule=result.rule,
                        **({"set": result.set} if result.set else {}),
                    )
