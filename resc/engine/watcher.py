"""A watcher: the loop that takes events from one input queue, applies the rules, and
commits each batch of outcomes atomically."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from functools import partial
from queue import Empty, SimpleQueue
from typing import NamedTuple, TypeVar

from resc.config.models import DEFAULT_RULE_NAME, Config, Fetch
from resc.config.models import Watcher as WatcherConfig
from resc.connection.edge import reconnect_delay_s
from resc.core.errors import (
    EventError,
    FetchStopped,
    HeartbeatLost,
    RedisUnavailable,
    StoreError,
)
from resc.core.keys import failed_reasons, orphaned_outbox, outbox
from resc.core.logs import get_logger
from resc.core.metrics import FetchStats, WatcherStats
from resc.engine.instances import Identity, Membership
from resc.engine.loop import LoopThread
from resc.engine.pool import Pool
from resc.engine.rules import RuleSet
from resc.engine.store import CommitReport, Listener, Outcome, Reply, Store
from resc.fetch.aio import AsyncFetcher

log = get_logger("resc.watcher")
# How often a wait for the event loop looks at the deadline, which a stop may set.
_POLL_S = 0.1
# How long a watcher with events in flight waits for one to finish before it looks for
# new events in the input queue again.
_TAKE_POLL_S = 0.01
# How long a watcher's event loop waits for more of its events in flight to finish
# once one has, before handing those done over to be committed.
_GATHER_S = 0.002
rules_log = get_logger("resc.rules")

T = TypeVar("T")


class Watcher:
    """Processes the events of one input queue until its `stop` is set."""

    def __init__(
        self,
        config: WatcherConfig,
        settings: Config,
        stop: threading.Event | None = None,
        store: Store | None = None,
        fetcher: AsyncFetcher | None = None,
        stats: WatcherStats | None = None,
        on_delayed: Callable[[], None] | None = None,
        identity: Identity | None = None,
        heartbeat_ttl_s: float | None = None,
    ) -> None:
        """`on_delayed` is called after a commit that put a task into its queue's
        delayed tasks (the daemon's scheduler.wake)."""
        self.config = config
        self._on_delayed = on_delayed
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
        # When set (with `stop`), a time.monotonic() after which the events still being
        # processed are abandoned: they go back to the input queue uncommitted.
        self.deadline: float | None = None
        self.stats = stats or WatcherStats()
        self.store = store or Store(settings.redis.url, wait_replicas=settings.redis.wait_replicas)
        self._rule_of_fetch = _rule_of_fetch(config)
        self.fetch = fetcher or AsyncFetcher(
            stop=self.stop,
            max_connections=config.max_connections or config.concurrency,
            stats_of=self._fetch_stats,
        )
        self._loop: LoopThread | None = None
        self.log = log.bind(watcher=config.input_queue)
        self._rules_log = rules_log.bind(watcher=config.input_queue)
        self.rules = RuleSet(config.rules)
        self._switch: tuple[WatcherConfig, RuleSet] | None = None
        self._switch_lock = threading.Lock()
        self._pool: Pool | None = None
        self._abandoned = False
        ttl_s = heartbeat_ttl_s or settings.heartbeat_ttl
        self.member = Membership(
            settings.redis.url, config, identity or Identity(), ttl_s, self.stop
        )
        # Events interrupted at the last recovery still to take, one at a time: only the
        # one that crashes resc is then counted again.
        self._alone = 0
        # A commit or an idle wait succeeded since the last (re)connection.
        self._worked = False

    def stop_by(self, deadline: float) -> None:
        """Stop: finish the events in hand, abandoning those still running at `deadline`
        (a time.monotonic() value)."""
        self.deadline = deadline
        self.stop.set()

    def use_rules(self, config: WatcherConfig) -> None:
        """Switch to new rules (a reloaded config): the batch in hand keeps the rules it
        started with, the batches after it use the new ones (with fetches: the events in
        flight keep theirs, those taken next use the new ones)."""
        rules = RuleSet(config.rules)
        with self._switch_lock:
            self._switch = (config, rules)

    def _batch_rules(self) -> RuleSet:
        """The rules for the next batch, read once for all of its events."""
        with self._switch_lock:
            switch, self._switch = self._switch, None
        if switch is not None:
            self.config, self.rules = switch
            self._rule_of_fetch = _rule_of_fetch(self.config)
            self.fetch.keep_only(fetch for rule in self.config.rules for fetch in rule.fetch)
        return self.rules

    def _fetch_stats(self, fetch: Fetch) -> FetchStats:
        """Where the requests of `fetch` are counted: its rule's counts, which outlive a
        reload."""
        return self.stats.fetch_stats(self._rule_of_fetch.get(id(fetch), DEFAULT_RULE_NAME))

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
                            break  # stopped while waiting for an instance id
                        connected = True
                        self.stats.ready = True
                        if lost:
                            lost = False
                            self.stats.reconnects += 1
                            self.log.info("Redis is back", url=self.store.display_url)
                    if self.member.orphaned():
                        # A sweep put a dead instance's outbox entries in the watcher's.
                        self._replay_outboxes()
                    if self._rules_fetch():
                        self._pump_fetching()
                    else:
                        self._pump()
                except HeartbeatLost as exc:
                    # Not an outage: join again at once, under a new id (see join()).
                    connected = False
                    self.log.warning("heartbeat lost: joining again", error=str(exc))
                except StoreError as exc:
                    # After any Redis error nothing held in memory is trusted: the next
                    # connection starts by recovering the taken list.
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
            self.member.release(self.store if connected else None)
            if self._pool is not None:
                self._pool.shutdown()
            if self._loop is not None:
                self._loop.close(self.fetch.close())
            self.store.close()

    def _start(self) -> bool:
        """Connect, join as an instance and recover its taken list; False when stopped
        meanwhile."""
        self.store.connect()
        if not self.member.join(self.store):
            return False
        self._recover()
        # Before the first take: what dead instances (or an older resc) had in hand is
        # taken first.
        self.member.sweep(self.store)
        self._alone += self.member.interrupted()
        if self._alone:
            self.log.info("taking the interrupted events one at a time", events=self._alone)
        if self.store.on_cluster:
            self.member.orphaned()
            self._replay_outboxes()
        return True

    def _replay_outboxes(self) -> None:
        """Apply what this instance's outbox and the watcher's orphaned entries still
        hold (resc.engine.outbox): results for other slots of a Redis Cluster, of events
        committed by a process that stopped before it had pushed them all."""
        cfg = self.config
        for entries in (outbox(self.member.taken_list), orphaned_outbox(cfg.taken_queue)):
            replayed = self.store.replay_outbox(
                entries, cfg.failed_queue, self.listener, cfg.taken_queue
            )
            if replayed.entries:
                self.log.warning(
                    "replayed the results for other slots of events committed before an "
                    "interruption",
                    outbox=entries,
                    entries=replayed.entries,
                    pushed=replayed.pushed,
                    already_pushed_or_in_set=replayed.deduplicated,
                    failed=replayed.failed,
                )

    def _recover(self, max_attempts: int | None = None) -> None:
        """Put back this instance's taken list, counted as interrupted (max_attempts 0:
        not counted)."""
        cfg = self.config
        recovered = self.store.recover(
            cfg.input_queue,
            self.member.taken_list,
            cfg.failed_queue,
            cfg.max_attempts if max_attempts is None else max_attempts,
            attempts_of=cfg.taken_queue,
            liveness=self.member.heartbeat,
            registry=self.member.registry,
        )
        assert recovered is not None  # only a recovery of another's list may be refused
        back, failed, interrupted, _ = recovered
        if max_attempts == 0:
            return
        self._alone = interrupted
        if back or failed:
            self.log.warning(
                "recovered interrupted events",
                put_back=back,
                failed=failed,
                taken_list=self.member.taken_list,
            )

    def _pump(self) -> None:
        """Take, process and commit batches until the input queue is empty or resc stops.

        Python and Redis work side by side: the next batch is taken while this one is
        processed, and this one is committed while the next one is processed. The
        commits go out in order on one connection, each atomic on its own.

        The event the blocking take brings is usually alone (the queue was empty), and
        the events after it are taken only once its commit is sent: the commit of a
        lone event does not wait behind a take.
        """
        cfg, store, member = self.config, self.store, self.member
        taken_list, heartbeat = member.taken_list, member.heartbeat
        first = store.wait_take(cfg.input_queue, taken_list)
        member.check()
        self._alone += member.interrupted()
        if first is None:
            self._worked = True
            return
        self._alone = max(0, self._alone - 1)
        events = [first]
        taken_at = time.monotonic()
        committing: _Committing | None = None
        woken = True  # `events` came by the blocking take
        while True:
            self._alone += member.interrupted()
            most = 1 if self._alone else cfg.batch
            if not woken:
                next_events = store.send_take(cfg.input_queue, taken_list, most, heartbeat)
            outcomes = self._process(events)
            if committing is not None:
                self._committed(committing)
            committing = _Committing(
                outcomes,
                store.send_commit(
                    taken_list,
                    cfg.failed_queue,
                    outcomes,
                    self.listener,
                    cfg.taken_queue,
                    input_queue=cfg.input_queue,
                ),
                taken_at,
            )
            # Counted once the commit is on its way: a lone event's task is not held up.
            self.stats.taken += len(events)
            self.stats.batch_sizes.observe(len(events))
            if woken:
                woken = False
                next_events = store.send_take(cfg.input_queue, taken_list, most, heartbeat)
            events = next_events.get()
            self._alone = max(0, self._alone - len(events))
            taken_at = time.monotonic()
            if not events or self.stop.is_set():
                break
            member.check()
        self._committed(committing)
        if self.stop.is_set():
            # Taken ahead but not processed: back to the input queue, in order, not
            # counted as interruptions.
            self._recover(0)

    def _rules_fetch(self) -> bool:
        """Whether the rules of the next events fetch (those of a reload, if any)."""
        with self._switch_lock:
            rules = self._switch[1] if self._switch is not None else self.rules
        return rules.fetches

    def _pump_fetching(self) -> None:
        """Take and process events while their rules fetch: up to `concurrency` in flight
        on the watcher's event loop, each committed as soon as it is done, together
        with the others done by then (in the order they were taken), without waiting
        for slower fetches taken before or with it.

        Returns when nothing is in flight and the input queue is empty, when the rules
        of a reload no longer fetch, or when resc stops: the events done by the stop's
        deadline are committed, the others go back to the input queue, first in line.
        """
        cfg, store, member = self.config, self.store, self.member
        taken_list, heartbeat = member.taken_list, member.heartbeat
        first = store.wait_take(cfg.input_queue, taken_list)
        member.check()
        self._alone += member.interrupted()
        if first is None:
            self._worked = True
            return
        self._alone = max(0, self._alone - 1)
        if self._loop is None:
            self._loop = LoopThread(f"{cfg.input_queue} fetches")
        flight = _Flight(self._loop, cfg.concurrency // 4)
        matched: list[str] = []
        info = self.log.isEnabledFor(logging.INFO)
        debug = self._rules_log.isEnabledFor(logging.DEBUG)

        def start(events: list[bytes]) -> None:
            rules = self._batch_rules()
            self.stats.taken += len(events)
            self.stats.batch_sizes.observe(len(events))
            flight.start(
                events,
                partial(
                    self._process_one_async, rules=rules, info=info, debug=debug, matched=matched
                ),
            )

        start([first])
        taking = True
        try:
            while flight.count:
                done = flight.wait(_TAKE_POLL_S if taking else _POLL_S)
                finished = [(outcome, at) for outcome, at in done if outcome is not None]
                committing = None
                if finished:
                    committing = _Committing(
                        [outcome for outcome, _ in finished],
                        store.send_commit(
                            taken_list,
                            cfg.failed_queue,
                            [outcome for outcome, _ in finished],
                            self.listener,
                            cfg.taken_queue,
                            input_queue=cfg.input_queue,
                        ),
                        min(at for _, at in finished),
                    )
                taking = taking and not self.stop.is_set() and self._rules_fetch()
                room = cfg.concurrency - flight.count
                if self._alone:
                    room = 0 if flight.count else 1
                taking_now = taking and room > 0
                next_events = (
                    store.send_take(
                        cfg.input_queue, taken_list, min(room, cfg.batch), heartbeat, ahead=False
                    )
                    if taking_now
                    else None
                )
                if committing is not None:
                    self._committed(committing)
                if matched:
                    fired = matched[:]
                    del matched[: len(fired)]
                    self.stats.matches.update(fired)
                if next_events is not None:
                    events = next_events.get()
                    member.check()
                    self._alone += member.interrupted()
                    self._alone = max(0, self._alone - len(events))
                    if events:
                        start(events)
                if self.stop.is_set():
                    deadline = self.deadline
                    if deadline is not None and time.monotonic() >= deadline:
                        self.log.warning(
                            "grace period over: abandoning the fetches still running; their "
                            "events go back to the input queue",
                            abandoned=flight.count,
                        )
                        break
        finally:
            flight.cancel()
        if self.stop.is_set():
            # Not done (abandoned, or stopped while waiting to retry): back to the input
            # queue, in order, not counted as interruptions.
            self._recover(0)

    def _process(self, events: Sequence[bytes]) -> list[Outcome]:
        """The outcome of each event, in order; fewer when resc is stopping (the rest is
        put back by _pump).

        Rules without fetches run in this thread: nothing in them can wait. Fetches run
        in the pool, so that a stop can abandon them at its deadline and still commit
        the events done before them.
        """
        rules = self._batch_rules()
        matched: list[str] = []
        info = self.log.isEnabledFor(logging.INFO)
        debug = self._rules_log.isEnabledFor(logging.DEBUG)
        concurrency = self.config.concurrency
        if rules.fetches:
            outcomes = self._process_on_loop(
                events,
                partial(
                    self._process_one_async, rules=rules, info=info, debug=debug, matched=matched
                ),
            )
        elif concurrency == 1:
            # The path of a lone event at a low rate: no more calls than it takes.
            outcomes = []
            process_one = self._process_one
            for event in events:
                outcome = process_one(event, rules, info, debug, matched)
                if outcome is None:
                    break
                outcomes.append(outcome)
        else:
            # Several at once; commits keep the order in which events were taken.
            process = partial(
                self._process_one, rules=rules, info=info, debug=debug, matched=matched
            )
            outcomes = []
            for future in self._run_until_deadline([partial(process, e) for e in events]):
                outcome = future.result() if future.done() and not future.cancelled() else None
                if outcome is None:
                    break
                outcomes.append(outcome)
        if matched:
            self.stats.matches.update(matched)
        return outcomes

    def _process_on_loop(
        self, events: Sequence[bytes], process: Callable[[bytes], Awaitable[Outcome | None]]
    ) -> list[Outcome]:
        """The outcomes of the events processed on the watcher's event loop, up to
        `concurrency` at once, until the first without one; at the stop's deadline, those
        done before the first unfinished event (the others are cancelled)."""
        if self._loop is None:
            self._loop = LoopThread(f"{self.config.input_queue} fetches")
        slots: list[Outcome | None] = [None] * len(events)
        job = self._loop.submit(_on_loop(events, process, slots, self.config.concurrency))
        while True:
            try:
                job.result(_POLL_S)
                break
            except FutureTimeout:
                deadline = self.deadline
                if deadline is not None and time.monotonic() >= deadline:
                    job.cancel()
                    self.log.warning(
                        "grace period over: abandoning the fetches still running; their "
                        "events go back to the input queue",
                        abandoned=sum(slot is None for slot in slots),
                    )
                    break
        outcomes = []
        for slot in list(slots):
            if slot is None:
                break
            outcomes.append(slot)
        return outcomes

    def _run_until_deadline(self, jobs: Sequence[Callable[[], T]]) -> list[Future[T]]:
        if self._pool is None:
            self._pool = Pool(self.config.concurrency, self.config.input_queue)
        futures = self._pool.run_until(jobs, lambda: self.deadline)
        running = sum(not future.done() for future in futures)
        if running:
            self._abandoned = True
            self.log.warning(
                "grace period over: abandoning the fetches still running; their events "
                "go back to the input queue",
                abandoned=running,
            )
        return futures

    def _process_one(
        self, event: bytes, rules: RuleSet, info: bool, debug: bool, matched: list[str]
    ) -> Outcome | None:
        if self.stop.is_set():
            return None
        if info:
            self.log.info("event taken", input_task=event)
        try:
            event.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Outcome(event, failure=f"event is not UTF-8 text: {exc}")
        fired: list[str] = []
        try:
            return Outcome(event, rules.apply(event, _no_fetch, fired))
        except FetchStopped:
            return None  # stopping while a fetch waited to retry: the event is put back
        except EventError as exc:
            return Outcome(event, failure=str(exc))
        except Exception as exc:
            if self._abandoned:
                return None  # the fetcher was closed under an abandoned fetch
            self.log.exception("unexpected error processing an event", input_task=event)
            return Outcome(event, failure=f"internal error: {exc!r}")
        finally:
            matched += fired
            if debug and not fired:
                self._rules_log.debug("no rule matched", input_task=event)

    async def _process_one_async(
        self, event: bytes, rules: RuleSet, info: bool, debug: bool, matched: list[str]
    ) -> Outcome | None:
        """_process_one on the event loop."""
        if self.stop.is_set():
            return None
        if info:
            self.log.info("event taken", input_task=event)
        try:
            event.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Outcome(event, failure=f"event is not UTF-8 text: {exc}")
        fired: list[str] = []
        try:
            return Outcome(event, await rules.apply_async(event, self.fetch, fired))
        except FetchStopped:
            return None  # stopping while a fetch waited to retry: the event is put back
        except EventError as exc:
            return Outcome(event, failure=str(exc))
        except Exception as exc:
            self.log.exception("unexpected error processing an event", input_task=event)
            return Outcome(event, failure=f"internal error: {exc!r}")
        finally:
            matched += fired
            if debug and not fired:
                self._rules_log.debug("no rule matched", input_task=event)

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
        delayed = 0
        for outcome, pushed in zip(outcomes, report.pushed, strict=True):
            for result, was_pushed in zip(outcome.results, pushed, strict=False):
                if was_pushed:
                    pushed_by_rule[result.rule] += 1
                    if result.due is not None:
                        delayed += 1
                        stats.delayed[result.rule] += 1
                else:
                    deduplicated_by_rule[result.rule] += 1
        if delayed and self._on_delayed is not None:
            self._on_delayed()
        info = self.log.isEnabledFor(logging.INFO)
        if info or "m" in report.status or "f" in report.status:
            self._log_report(outcomes, report, info)

    def _log_report(self, outcomes: Sequence[Outcome], report: CommitReport, info: bool) -> None:
        for i, (outcome, status) in enumerate(zip(outcomes, report.status, strict=True)):
            if status == "m":
                self.log.warning(
                    "event no longer in this instance's taken list: not committed, it "
                    "will be processed again (the heartbeat expired and another instance "
                    "put the list back)",
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
                        **({"make": result.make} if result.make else {}),
                        **({"set": result.set} if result.set else {}),
                        **({"due": _iso(result.due)} if result.due is not None else {}),
                    )


def _iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="milliseconds")


async def _on_loop(
    events: Sequence[bytes],
    process: Callable[[bytes], Awaitable[Outcome | None]],
    slots: list[Outcome | None],
    concurrency: int,
) -> None:
    """Process the events into their slots, `concurrency` at a time; events after one
    without an outcome (resc is stopping) are not started."""
    upcoming = iter(enumerate(events))
    stopped = len(events)

    async def work() -> None:
        nonlocal stopped
        for i, event in upcoming:
            if i > stopped:
                return
            outcome = await process(event)
            if outcome is None:
                stopped = min(stopped, i)
                return
            slots[i] = outcome

    await asyncio.gather(*(work() for _ in range(min(concurrency, len(events)))))


class _Flight:
    """The events being processed on a watcher's event loop, and their outcomes as they
    finish (None for an event left to put back: resc is stopping). `count` and the
    methods belong to the watcher's thread; the rest runs on the loop.

    The loop gathers what finishes into waves and hands each over at once: when
    `enough` are done, when nothing else runs, or _GATHER_S after the wave's first. The
    watcher's thread then wakes once per wave (one commit for many events costs Redis
    and that thread much less), not once per event.
    """

    def __init__(self, loop: LoopThread, enough: int) -> None:
        self.count = 0
        self._loop = loop.loop
        self._enough = max(1, enough)
        self._done: SimpleQueue[list[tuple[Outcome | None, float]]] = SimpleQueue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._finished: list[tuple[Outcome | None, float]] = []
        self._running = 0  # on the loop
        self._timer: asyncio.TimerHandle | None = None

    def start(
        self, events: Sequence[bytes], process: Callable[[bytes], Awaitable[Outcome | None]]
    ) -> None:
        self.count += len(events)
        self._loop.call_soon_threadsafe(self._start, events, process, time.monotonic())

    def wait(self, timeout_s: float) -> list[tuple[Outcome | None, float]]:
        """The outcomes finished since the last call, and when their events were taken;
        waits up to `timeout_s` for a wave."""
        try:
            done = self._done.get(timeout=timeout_s)
        except Empty:
            return []
        while not self._done.empty():
            done += self._done.get()
        self.count -= len(done)
        return done

    def cancel(self) -> None:
        """Cancel the events still in flight: they stay in the taken list."""
        self._loop.call_soon_threadsafe(self._cancel)

    def _start(
        self,
        events: Sequence[bytes],
        process: Callable[[bytes], Awaitable[Outcome | None]],
        taken_at: float,
    ) -> None:
        self._running += len(events)
        for event in events:
            task = self._loop.create_task(self._one(event, process, taken_at))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _one(
        self, event: bytes, process: Callable[[bytes], Awaitable[Outcome | None]], taken_at: float
    ) -> None:
        try:
            outcome = await process(event)
        finally:
            self._running -= 1
        finished = self._finished
        finished.append((outcome, taken_at))
        if len(finished) >= self._enough or not self._running:
            self._hand_over()
        elif self._timer is None:
            self._timer = self._loop.call_later(_GATHER_S, self._hand_over)

    def _hand_over(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        finished, self._finished = self._finished, []
        if finished:
            self._done.put(finished)

    def _cancel(self) -> None:
        for task in self._tasks:
            task.cancel()


def _no_fetch(fetch: Fetch, variables: object) -> list[dict[str, bytes]]:
    """The fetch function of batches whose rules do not fetch (those that do are
    processed on the event loop)."""
    raise AssertionError(f"{fetch.url.source}: fetched outside the event loop")


def _rule_of_fetch(config: WatcherConfig) -> dict[int, str]:
    """id() of each fetch of the watcher's rules -> its rule's name (the config keeps
    the fetches alive, so their ids are not reused)."""
    return {id(fetch): rule.name for rule in config.rules for fetch in rule.fetch}


class _Committing(NamedTuple):
    """A batch whose commit was sent, and when it was taken."""

    outcomes: list[Outcome]
    reply: Reply[CommitReport]
    taken_at: float
