"""Workers in Python: the take / do / notify protocol, made safe by default.

    from resc.worker.worker import Worker

    worker = Worker("redis://127.0.0.1:6379/0", queue="trt/plantA/todo-queue",
                    set="trt/plantA/todo-set", done_queue="global/events")

    @worker.handler
    def compute(task: str) -> None:
        ...  # raise to retry; raise TaskFailed("why") to fail at once

    worker.run()  # until SIGINT or SIGTERM, then after the tasks in hand

For each task: BLMOVE from the queue into the worker's own taken list
(`<queue>/taken/<worker id>`); ZREM from the set (before the handler, or after it);
the handler; then, in one atomic step, LPUSH of the task into the done queue (the
notice: the finished task is itself an event for resc) and LREM from the taken list.
A handler that raises (anything) is retried with a doubling delay, then the task goes to
the failed list (`<queue>/failed`) and its record to the hash `<queue>/failed/reasons`.
Putting a task back into the queue keeps the dedup set consistent (store.Calls).

Each worker refreshes a heartbeat key with a TTL, and takes only while it is surely
alive. Every worker also reaps, at start and periodically: the tasks of workers whose
heartbeat has expired (killed, cut off), registered or found by a SCAN, go back into the
queue, so a dead worker's task is done by another, once, with no manual step. A taking
thread that dies stops the worker, its tasks given back.
Compatible mode (`taken_queue=`) uses a fixed taken list shared with other workers,
exactly the original protocol: no heartbeat and no reaper then.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import Literal, TypeVar

import redis

from resc.core import logs
from resc.core.errors import EXIT_FORCED, RedisUnavailable, RescError, StoreError
from resc.core.logs import get_logger
from resc.worker.settings import worker_settings
from resc.worker.store import WorkerStore, check_client
from resc.worker.tasks import (
    AttemptFailed,
    Handler,
    Registration,
    TaskContext,
    TaskFailed,
    TaskLoop,
    WorkerError,
    log_heartbeat_lost,
    log_reaped,
    until_answered,
    wants_context,
)

__all__ = ["AttemptFailed", "Handler", "TaskContext", "TaskFailed", "Worker", "WorkerError"]

# A second stop signal this soon after the first is the same stop sent twice.
SIGNAL_REPEAT_S = 0.5
# How often the keeper checks that the taking threads are alive.
THREAD_CHECK_S = 0.1
# The search for taken lists of unregistered workers, per reap: SCAN steps and COUNT.
SCAN_STEPS_PER_REAP = 5
SCAN_COUNT = 1000

log = get_logger("resc.worker")

H = TypeVar("H", bound=Handler)


class Worker:
    """Takes tasks from `queue` and runs the handler on each, in `concurrency` threads.

    `set`: the dedup set of the queue, from which each task is removed, `zrem="before"`
    the handler (the task may be queued again while it runs) or `"after"` it (it may not).
    `done_queue`: where finished tasks are pushed as events (None: no notice).
    `retries` more attempts after a handler raised, the first `retry_delay_s` later and
    each next one twice as late. `timeout_s`: an attempt running longer fails (its
    thread is left running; more such threads than `concurrency` stop the worker).
    `heartbeat_ttl_s`: how long after its last heartbeat a silent worker counts as dead.
    `worker_id`: unique among the queue's workers (default: host, process id and a random
    part). `taken_queue`: compatible mode. Instead of `redis_url`, `client=` or `pool=`:
    a redis-py client or pool with no retries, a socket timeout above TAKE_BLOCK_S and
    bytes replies (ValueError otherwise), used but not closed.

    The handler is `handler(task)`, or `handler(task, context)` to get a TaskContext.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        queue: str,
        client: redis.Redis | None = None,
        pool: redis.ConnectionPool | None = None,
        set: str | None = None,
        done_queue: str | None = "global/events",
        handler: Handler | None = None,
        zrem: Literal["before", "after"] = "before",
        concurrency: int = 1,
        retries: int = 3,
        retry_delay_s: float = 1.0,
        failed_queue: str | None = None,
        worker_id: str | None = None,
        heartbeat_ttl_s: float = 30.0,
        taken_queue: str | None = None,
        timeout_s: float | None = None,
    ) -> None:
        settings = worker_settings(
            connections=sum(x is not None for x in (redis_url, client, pool)),
            queue=queue,
            set=set,
            done_queue=done_queue,
            zrem=zrem,
            concurrency=concurrency,
            retries=retries,
            retry_delay_s=retry_delay_s,
            failed_queue=failed_queue,
            worker_id=worker_id,
            heartbeat_ttl_s=heartbeat_ttl_s,
            taken_queue=taken_queue,
            timeout_s=timeout_s,
        )
        if pool is not None:
            client = redis.Redis(connection_pool=pool)
        if client is not None:
            check_client(client.get_connection_kwargs())
        if handler is not None:
            wants_context(handler)  # a TypeError now rather than at the first task
        self.worker_id = settings.worker_id
        self.keys = settings.keys
        self.options = settings.options
        self.concurrency = concurrency
        self.heartbeat_ttl_s = heartbeat_ttl_s
        self.store = WorkerStore(
            self.keys, f"resc-worker-{self.worker_id}", url=redis_url, client=client
        )
        self.registration = Registration(None if taken_queue else heartbeat_ttl_s)
        self._tasks: TaskLoop | None = None
        self._handler = handler
        self._holder = settings.holder
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None
        self._fatal: RescError | None = None
        self._signalled_at: float | None = None
        self._scan_cursor = 0
        self.log = log.bind(worker=self.worker_id, queue=queue)

    @property
    def compatible(self) -> bool:
        """True in compatible mode: a fixed, shared taken list, no heartbeat, no reaper."""
        return self.options.compatible

    def handler(self, function: H) -> H:
        """Decorator: register `function(task: str)` as the handler, or
        `function(task: str, context: TaskContext)` for one that wants the attempt
        number and the rest of the context."""
        wants_context(function)
        self._handler = function
        return function

    # --- lifetime ---------------------------------------------------------------------

    def start(self) -> None:
        """Start working in background threads; returns at once. A Redis that is down is
        waited for."""
        if self._handler is None:
            raise WorkerError(
                "no handler: pass handler= or decorate a function with @worker.handler"
            )
        if self._keeper is not None:
            raise WorkerError("this worker was already started")
        self._keeper = threading.Thread(
            target=self._keep, name=f"worker {self.worker_id}", daemon=True
        )
        self._keeper.start()

    def stop(self) -> None:
        """Ask the worker to stop once the tasks in hand are finished; returns at once."""
        self._stop.set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until the worker has stopped; True if it has. Raises WorkerError when it
        stopped on an error it cannot go on after."""
        if self._keeper is None:
            raise WorkerError("this worker was not started")
        self._keeper.join(timeout_s)
        if self._keeper.is_alive():
            return False
        if self._fatal is not None:
            raise WorkerError(str(self._fatal))
        return True

    def run(self) -> None:
        """Work until SIGINT or SIGTERM (a second one gives the tasks in hand back and
        exits at once), or until stop(). Sets up resc's logging (RESC_LOG) unless
        logging is already configured. Raises WorkerError when the worker stopped on an
        error, its tasks given back."""
        if not logging.getLogger().handlers:
            logs.configure()
        in_main_thread = threading.current_thread() is threading.main_thread()
        previous = {}
        if in_main_thread:
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, self._on_signal)
        try:
            self.start()
            # Not one blocking wait: a signal the kernel delivers to another thread runs
            # its handler only once this (main) thread wakes.
            while not self.wait(0.1):
                pass
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)

    def _on_signal(self, signum: int, _: FrameType | None) -> None:
        if self.signalled(signum) == "forced":
            self.abort()
            os._exit(EXIT_FORCED)

    def signalled(self, signum: int) -> Literal["stopping", "forced", "ignored"]:
        """What a stop signal means now: the first one stops after the tasks in hand; a
        second one forces the exit (the caller then calls abort() and exits); one within
        SIGNAL_REPEAT_S of the first is the same stop sent twice (a process group's
        kill, `timeout`) and is ignored."""
        name = signal.Signals(signum).name
        now = time.monotonic()
        if self._signalled_at is None:
            self._signalled_at = now
            self.log.info("stopping after the tasks in hand", signal=name)
            self._stop.set()
            return "stopping"
        if now - self._signalled_at < SIGNAL_REPEAT_S:
            return "ignored"
        self.log.warning("second signal: giving the tasks in hand back and exiting", signal=name)
        return "forced"

    def abort(self) -> int:
        """Give the tasks in hand back to the queue now, for an exit that cannot wait for
        them; the handlers' outcomes are dropped from then on. Returns how many tasks
        were given back."""
        self._stop.set()
        tasks = self._tasks
        if tasks is None:
            return 0
        tasks.aborting.set()
        try:
            if self.compatible:
                # The taken list is shared: give back only this worker's own tasks.
                return sum(self.store.release(task) for task in tasks.in_hand())
            return max(0, self.store.reap(self.worker_id, leaving=True))
        except StoreError as exc:
            self.log.warning(
                "could not give the tasks in hand back: a reaper re-queues them once the "
                "heartbeat expires",
                error=str(exc),
                taken=self.keys.taken,
            )
            return 0

    # --- the keeper: registration, heartbeat, reaper, and the taking threads ----------

    def _keep(self) -> None:
        takers: list[threading.Thread] = []
        joined = False
        try:
            if until_answered("connecting", self.store.connect, self._stop, self.log) is None:
                return
            if not self.compatible:
                joined = self._join()
                if not joined:
                    return
            self.log.info("worker started", concurrency=self.concurrency, taken=self.keys.taken)
            assert self._handler is not None
            self._tasks = TaskLoop(
                self.store,
                self._handler,
                self.options,
                self._stop,
                self._give_up,
                self.log,
                self.registration,
            )
            for n in range(self.concurrency):
                thread = threading.Thread(
                    target=self._tasks.run, name=f"worker {self.worker_id} #{n}", daemon=True
                )
                takers.append(thread)
                thread.start()
            self._beat_and_reap(takers)
        except RescError as exc:
            self._give_up(exc)
        finally:
            self._stop.set()
            for thread in takers:
                thread.join()
            if joined and not (self._tasks is not None and self._tasks.aborting.is_set()):
                self._leave()
            self.store.close()
            self.log.info("worker stopped")

    def _give_up(self, exc: RescError) -> None:
        if self._fatal is None:
            self._fatal = exc
            self.log.error("worker stopping on an error", error=str(exc))
        self._stop.set()

    def _join(self) -> bool:
        ttl_ms = self._ttl_ms()
        sent_at = time.monotonic()

        def join() -> int:
            nonlocal sent_at
            sent_at = time.monotonic()
            return self.store.join(self.worker_id, ttl_ms, self._holder)

        answer = until_answered("registering", join, self._stop, self.log)
        if answer is None:
            return False
        moved = answer[0]
        if moved < 0:
            raise WorkerError(
                f"worker id {self.worker_id!r} is in use on {self.keys.queue}: its heartbeat "
                f"{self.keys.heartbeat} is alive (if that worker is dead, it expires within "
                f"{self.heartbeat_ttl_s:g} s)"
            )
        self.registration.refreshed_at(sent_at)
        if moved:
            self.log.warning("tasks left taken by a previous run put back", count=moved)
        return True

    def _ttl_ms(self) -> int:
        return max(1, round(self.heartbeat_ttl_s * 1000))

    def _beat_and_reap(self, takers: list[threading.Thread]) -> None:
        """Reap dead workers now, then refresh the heartbeat three times per TTL and reap
        again every other beat, until stopped; stop when a taking thread has died (its
        task would sit behind a live heartbeat for ever). In compatible mode, only watch
        the threads."""
        beat_s = self.heartbeat_ttl_s / 3
        beats_per_reap = 2  # every 2/3 TTL: a dead worker is reaped within 5/3 TTL
        failing = False
        beats = 0
        while True:
            try:
                if not self.compatible and beats % beats_per_reap == 0:
                    self._reap()
                if self._wait_watching(takers, beat_s):
                    return
                if self.compatible:
                    continue
                sent_at = time.monotonic()
                since_refresh_s = self.registration.since_refresh_s()
                alive, registered = self.store.beat(self.worker_id, self._ttl_ms(), self._holder)
                self.registration.refreshed_at(sent_at)
                beats += 1
            except RedisUnavailable as exc:
                if not failing:
                    self.log.warning("Redis unavailable, retrying", error=str(exc))
                failing = True
                if self._wait_watching(takers, beat_s):
                    return
                continue
            if failing:
                self.log.info("Redis is back")
            if not alive:
                log_heartbeat_lost(
                    self.log, since_refresh_s, self.heartbeat_ttl_s, registered, self.keys
                )
            failing = False

    def _wait_watching(self, takers: list[threading.Thread], wait_s: float) -> bool:
        """Wait up to `wait_s`; True when the worker is to stop."""
        deadline = time.monotonic() + wait_s
        while not self._stop.wait(min(THREAD_CHECK_S, max(0.0, deadline - time.monotonic()))):
            dead = [thread.name for thread in takers if not thread.is_alive()]
            if dead:
                self._give_up(WorkerError(f"a taking thread died: {dead[0]}"))
                return True
            if time.monotonic() >= deadline:
                return False
        return True

    def _reap(self) -> None:
        seen = {self.worker_id}
        for worker_id in self.store.worker_ids():
            if worker_id not in seen:  # never itself: its heartbeat may have come back
                seen.add(worker_id)
                self._reap_one(worker_id)
        # Taken lists of workers that are not registered (reaped while alive, then cut
        # off for good; or Redis lost the registry): a few SCAN steps per reap.
        for _ in range(SCAN_STEPS_PER_REAP):
            self._scan_cursor, found = self.store.scan_taken(self._scan_cursor, SCAN_COUNT)
            for worker_id in found:
                if worker_id not in seen:
                    seen.add(worker_id)
                    self._reap_one(worker_id)
            if self._scan_cursor == 0:
                break

    def _reap_one(self, worker_id: str) -> None:
        log_reaped(self.log, worker_id, self.store.reap(worker_id))

    def _leave(self) -> None:
        try:
            moved = self.store.reap(self.worker_id, leaving=True)
        except StoreError as exc:
            self.log.warning(
                "could not unregister: another worker re-queues the tasks left in the taken "
                "list once the heartbeat expires",
                error=str(exc),
                taken=self.keys.taken,
            )
            return
        if moved:
            self.log.warning("tasks left unfinished put back into the queue", count=moved)
