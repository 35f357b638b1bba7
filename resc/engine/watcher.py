"""A watcher: the loop that takes events from one input queue, applies the rules, and
commits each batch of outcomes atomically."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from itertools import takewhile
from typing import NamedTuple

from resc.config.models import Config
from resc.config.models import Watcher as WatcherConfig
from resc.connection.edge import reconnect_delay_s
from resc.core.errors import EventError, FetchStopped, RedisUnavailable, StoreError
from resc.core.keys import failed_reasons
from resc.core.logs import get_logger
from resc.core.metrics import WatcherStats
from resc.engine.owner import Ownership
from resc.engine.rules import RuleSet
from resc.engine.store import CommitReport, Listener, Outcome, Reply, Store
from resc.fetch.client import Fetcher

log = get_logger("resc.watcher")


class Watcher:
    """Processes the events of one input queue until its `stop` is set."""

    def __init__(
        self,
        config: WatcherConfig,
        settings: Config,
        stop: threading.Event | None = None,
        store: Store | None = None,
        fetcher: Fetcher | None = None,
    ) -> None:
        self.config = config
        self.listener = (
            Listener(
                settings.listener_channel,
                settings.listener_format == "json",
                config.input_queue,
            )
            if settings.listener_channel
            else None
        )
        self.stop = stop or threading.Event()
        self.store = store or Store(settings.redis.url)
        self.fetch = fetcher or Fetcher(stop=self.stop, concurrency=config.concurrency)
        self.log = log.bind(watcher=config.input_queue)
        self.rules = RuleSet(config.rules)
        self.stats = WatcherStats()
        self.owner = Ownership(settings.redis.url, config.taken_queue, self.stop)
        # Events interrupted at the last recovery still to take, one at a time: only the
        # one that crashes resc is then counted again.
        self._alone = 0
        # A commit or an idle wait succeeded since the last (re)connection.
        self._worked = False
        self._pool = (
            ThreadPoolExecutor(config.concurrency, thread_name_prefix=config.input_queue)
            if config.concurrency > 1
            else None
        )

    def use_rules(self, config: WatcherConfig) -> None:
        """Switch to new rules (a reloaded config); batches after the current one use them."""
        self.rules = RuleSet(config.rules)
        self.config = config
        self.fetch.keep_only(fetch for rule in config.rules for fetch in rule.fetch)

    def run(self) -> None:
        """The watcher's loop; returns when `stop` is set. Redis errors are waited out."""
        connected = False
        failures = 0
        lost = False  # the connection was lost, not a command refused
        try:
            while not self.stop.is_set():
                try:
                    if not connected:
                        if not self._start():
                            break  # stopped while waiting for the owner key
                        connected = True
                        self.stats.ready = True
                        if lost:
                            lost = False
                            self.stats.reconnects += 1
                            self.log.info("Redis is back", url=self.store.display_url)
                    self._pump()
                except StoreError as exc:
                    # After any Redis error nothing held in memory is trusted: the next
                    # connection starts by recovering the taken queue.
                    connected = False
                    # The wait keeps growing while the same failure follows each
                    # recovery (a key of the wrong type): it starts again only after
                    # some work was done.
                    if self._worked:
                        failures = 0
                    self._worked = False
                    # The reason first: /readyz reads these from another thread.
                    self.stats.not_ready_because = f"Redis unavailable: {exc}"
                    self.stats.ready = False
                    delay = reconnect_delay_s(failures)
                    if failures == 0 and isinstance(exc, RedisUnavailable):
                        lost = True
                        self.log.warning("Redis unavailable, retrying", error=str(exc))
                    elif failures == 0:
                        self.log.error("Redis refused a command, retrying", error=str(exc))
                    else:
                        self.log.debug("Redis still unavailable", error=str(exc), retry_in_s=delay)
                    failures += 1
                    self.stop.wait(delay)
        finally:
            self.owner.release()
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            self.fetch.close()
            self.store.close()

    def _start(self) -> bool:
        """Connect, claim the taken queue and recover it; False when stopped meanwhile."""
        self.store.connect()
        if not self.owner.claim(self.store):
            return False
        self._recover()
        return True

    def _recover(self) -> None:
        cfg = self.config
        back, failed, interrupted = self.store.recover(
            cfg.input_queue, cfg.taken_queue, cfg.failed_queue, cfg.max_attempts
        )
        self._alone = interrupted
        if back or failed:
            self.log.warning(
                "recovered interrupted events",
                put_back=back,
                failed=failed,
                taken_queue=cfg.taken_queue,
            )
        if interrupted:
            self.log.info("taking the interrupted events one at a time", events=interrupted)

    def _pump(self) -> None:
        """Take, process and commit batches until the input queue is empty or resc stops.

        Python and Redis work side by side: the next batch is taken while this one is
        processed, and this one is committed while the next one is processed. The
        commits go out in order on one connection, each atomic on its own.
        """
        cfg, store = self.config, self.store
        first = store.wait_take(cfg.input_queue, cfg.taken_queue)
        self.owner.check()
        if first is None:
            self._worked = True
            # Idle with nothing in hand: whatever is in the taken queue was left there
            # by another watcher (a crashed resc, or this queue's watcher before a
            # reload), and nobody else will put it back.
            if store.lengths([cfg.taken_queue])[0]:
                self._recover()
            return
        self._alone = max(0, self._alone - 1)
        events = [first]
        taken_at = time.monotonic()
        committing: _Committing | None = None
        while True:
            most = 1 if self._alone else cfg.batch
            next_events = store.send_take(cfg.input_queue, cfg.taken_queue, most)
            self.stats.taken += len(events)
            self.stats.batch_sizes.observe(len(events))
            outcomes = self._process(events)
            if committing is not None:
                self._committed(committing)
            committing = _Committing(
                outcomes,
                store.send_commit(cfg.taken_queue, cfg.failed_queue, outcomes, self.listener),
                taken_at,
            )
            events = next_events.get()
            self._alone = max(0, self._alone - len(events))
            taken_at = time.monotonic()
            if not events or self.stop.is_set():
                break
            self.owner.check()
        self._committed(committing)
        if self.stop.is_set():
            # Taken ahead but not processed: back to the input queue, in order, not
            # counted as interruptions.
            store.recover(cfg.input_queue, cfg.taken_queue, cfg.failed_queue, 0)

    def _process(self, events: Sequence[bytes]) -> list[Outcome]:
        """The outcome of each event, in order; fewer when resc is stopping (the rest is
        put back by _pump)."""
        info = self.log.isEnabledFor(logging.INFO)
        matched: list[str] = []
        if self._pool is None or len(events) == 1:
            outcomes: list[Outcome] = []
            for event in events:
                outcome = self._process_one(event, info, matched)
                if outcome is None:
                    break
                outcomes.append(outcome)
        else:
            # Several at once; commits keep the order in which events were taken.
            process = partial(self._process_one, info=info, matched=matched)
            done = list(self._pool.map(process, events))
            outcomes = list(takewhile(lambda o: o is not None, done))  # type: ignore[arg-type]
        self.stats.matches.update(matched)
        return outcomes

    def _process_one(self, event: bytes, info: bool, matched: list[str]) -> Outcome | None:
        if self.stop.is_set():
            return None
        if info:
            self.log.info("event taken", input_task=event)
        try:
            event.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Outcome(event, failure=f"event is not UTF-8 text: {exc}")
        try:
            return Outcome(event, self.rules.apply(event, self.fetch, matched))
        except FetchStopped:
            return None  # stopping while a fetch waited to retry: the event is put back
        except EventError as exc:
            return Outcome(event, failure=str(exc))
        except Exception as exc:
            self.log.exception("unexpected error processing an event", input_task=event)
            return Outcome(event, failure=f"internal error: {exc!r}")

    def _committed(self, committing: _Committing) -> None:
        """Read a commit's reply; count and log what it did."""
        report = committing.reply.get()
        self._worked = True
        outcomes = committing.outcomes
        stats = self.stats
        stats.event_seconds.observe(time.monotonic() - committing.taken_at, len(outcomes))
        stats.committed += report.status.count("c")
        stats.failed += report.status.count("f")
        pushed_by_rule, deduplicated_by_rule = stats.pushed, stats.deduplicated
        for outcome, pushed in zip(outcomes, report.pushed, strict=True):
            for result, was_pushed in zip(outcome.results, pushed, strict=False):
                if was_pushed:
                    pushed_by_rule[result.rule] += 1
                else:
                    deduplicated_by_rule[result.rule] += 1
        info = self.log.isEnabledFor(logging.INFO)
        if info or "m" in report.status or "f" in report.status:
            self._log_report(outcomes, report, info)

    def _log_report(self, outcomes: Sequence[Outcome], report: CommitReport, info: bool) -> None:
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


class _Committing(NamedTuple):
    """A batch whose commit was sent, and when it was taken."""

    outcomes: list[Outcome]
    reply: Reply[CommitReport]
    taken_at: float
