"""A worker's taking threads: take a task, remove it from its set, run the handler with
retries, then notify it done or move it to the failed list (see worker.py)."""

from __future__ import annotations

import inspect
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from resc.connection.edge import reconnect_delay_s
from resc.core.errors import RedisUnavailable, RescError
from resc.worker import store as worker_store
from resc.worker.store import WorkerKeys, WorkerStore

# `handler(task)`, or `handler(task, context)` for a handler that takes a TaskContext.
Handler = Callable[..., object]
T = TypeVar("T")

MAX_RETRY_DELAY_S = 300.0


class AttemptFailed(Exception):
    """Raise from a handler to fail this attempt with the message as the whole reason
    (other exceptions get their type name before it); retried like any exception."""


class TaskFailed(Exception):
    """Raise from a handler to send the task to the failed list at once, with no retry;
    the message is the reason recorded."""


class HandlerTimedOut(Exception):
    """The handler ran past the worker's timeout; retried like any exception."""


class WorkerError(RescError):
    """The worker cannot go on: its id is in use, or Redis refused a command."""


def until_answered(
    action: str, call: Callable[[], T], stop: threading.Event, log: Any, failures: int = 0
) -> tuple[T, bool] | None:
    """call() until Redis answers, with growing delays: (its result, whether a connection
    error came first, in this call or before it: `failures`). None when `stop` is set
    while Redis is unavailable."""
    while True:
        try:
            result = call()
        except RedisUnavailable as exc:
            if failures == 0:
                log.warning("Redis unavailable, retrying", action=action, error=str(exc))
            delay_s = reconnect_delay_s(failures)
            failures += 1
            if stop.wait(delay_s):
                return None
            continue
        if failures:
            log.info("Redis is back", action=action)
        return result, failures > 0


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What a handler declared with a second parameter gets besides the task text."""

    task: str
    attempt: int  # 1 for the first try, 2 for the first retry...
    worker_id: str
    queue: str
    taken_at_s: float  # when the task was taken, unix seconds


def wants_context(handler: Handler) -> bool:
    """True for `handler(task, context)`, False for `handler(task)`; TypeError for a
    callable that cannot be called either way."""
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):  # a builtin with no signature: call it with the task
        return False
    takes_any_number = any(
        p.kind is inspect.Parameter.VAR_POSITIONAL for p in signature.parameters.values()
    )
    if _binds(signature, 2) and not takes_any_number:  # (task, context), maybe with defaults
        return True
    if _binds(signature, 1):  # (task), or (*args): the task alone
        return False
    raise TypeError(
        f"the handler {getattr(handler, '__name__', handler)!r} must take the task, or the "
        f"task and a context: (task) or (task, context), not {signature}"
    )


def _binds(signature: inspect.Signature, arity: int) -> bool:
    try:
        signature.bind(*range(arity))
    except TypeError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class TaskOptions:
    zrem: Literal["before", "after"]
    retries: int
    retry_delay_s: float
    compatible: bool  # a taken list shared with other workers
    worker_id: str
    timeout_s: float | None = None
    # Handler threads past their timeout still running, beyond which the worker stops.
    max_abandoned: int = 1


class Registration:
    """Whether this worker's heartbeat is surely alive, from the time of its last refresh:
    a worker takes only while it is, so that a reaper never misses a task it took."""

    def __init__(self, heartbeat_ttl_s: float | None) -> None:
        self._ttl_s = heartbeat_ttl_s  # None: compatible mode, always registered
        self._refreshed_at = float("-inf")
        self.refreshed = threading.Event()  # set at each refresh, to wake a waiting take

    def refreshed_at(self, sent_at: float) -> None:
        """A refresh sent at `sent_at` (time.monotonic) was answered."""
        self._refreshed_at = max(self._refreshed_at, sent_at)
        self.refreshed.set()

    def since_refresh_s(self) -> float:
        return time.monotonic() - self._refreshed_at

    def alive(self) -> bool:
        """True while the heartbeat lives for at least a whole take to come (or, with a
        TTL shorter than two takes, half the TTL)."""
        if self._ttl_s is None:
            return True
        margin_s = min(worker_store.TAKE_BLOCK_S, self._ttl_s / 2)
        return self.since_refresh_s() + margin_s < self._ttl_s


class TaskLoop:
    """What the taking threads of one worker share. Each runs `run()` until `stop`."""

    def __init__(
        self,
        store: WorkerStore,
        handler: Handler,
        options: TaskOptions,
        stop: threading.Event,
        give_up: Callable[[RescError], None],
        log: Any,
        registration: Registration,
    ) -> None:
        self.store = store
        self.keys = store.keys
        self.handler = handler
        self.with_context = wants_context(handler)
        self.options = options
        self.stop = stop
        self.give_up = give_up
        self.log = log
        self.registration = registration
        # Set when the worker is forced to exit: a handler's outcome is then dropped,
        # the task having been given back.
        self.aborting = threading.Event()
        # Takes are one at a time, so that after a lost connection the taken list can be
        # compared with the tasks in hand while no take is under way.
        self._take_lock = threading.Lock()
        self._in_hand: Counter[bytes] = Counter()
        self._in_hand_lock = threading.Lock()
        self._abandoned: list[threading.Thread] = []
        self._abandoned_lock = threading.Lock()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                task = self._take()
                if task is not None:
                    self._process(task)
        except RescError as exc:
            self.give_up(exc)
        except BaseException as exc:  # even SystemExit: a thread must not die silently
            self.log.exception("worker thread crashed")
            self.give_up(WorkerError(f"internal error: {exc!r}"))

    def in_hand(self) -> list[bytes]:
        """The tasks the threads hold, a copy of each."""
        with self._in_hand_lock:
            return list(self._in_hand.elements())

    def _until_answered(
        self, action: str, call: Callable[[], T], failures: int = 0
    ) -> tuple[T, bool] | None:
        return until_answered(action, call, self.stop, self.log, failures)

    def _take(self) -> bytes | None:
        with self._take_lock:
            if self.stop.is_set() or self.aborting.is_set():
                return None
            if not self.registration.alive():
                # Cut off for long enough that a reaper may have forgotten this worker:
                # a task taken now could be stranded. Wait for the next heartbeat.
                self.registration.refreshed.clear()
                self.registration.refreshed.wait(worker_store.TAKE_BLOCK_S)
                return None
            try:
                task = self.store.take()
            except RedisUnavailable as exc:
                self.log.warning("Redis unavailable, retrying", error=str(exc))
                # The take may have happened with its reply lost: that task would sit in
                # the taken list with nobody doing it.
                self._until_answered("re-reading the taken list", self._recover_lost_take, 1)
                return None
            if task is not None:
                with self._in_hand_lock:
                    self._in_hand[task] += 1
            return task

    def _recover_lost_take(self) -> None:
        """Give back to the queue the tasks of the taken list that no thread holds. Called
        with the take lock held: no task is between the taken list and `_in_hand`."""
        if self.options.compatible:
            self.log.warning(
                "a take may have happened with its reply lost: in compatible mode that task "
                "stays in the shared taken list until it is recovered by hand",
                taken=self.keys.taken,
            )
            return
        with self._in_hand_lock:
            in_hand = Counter(self._in_hand)
        # Read after the snapshot: a task finished meanwhile has left the taken list
        # before it left `_in_hand`, so it cannot look unheld.
        orphans = Counter(self.store.taken_tasks()) - in_hand
        for task, count in orphans.items():
            for _ in range(count):
                if self.store.release(task):
                    self.log.warning("task taken while the connection dropped put back", task=task)

    def _process(self, task: bytes) -> None:
        try:
            self._do(task)
        finally:
            with self._in_hand_lock:
                self._in_hand[task] -= 1
                if self._in_hand[task] <= 0:
                    del self._in_hand[task]

    def _do(self, task: bytes) -> None:
        taken_at_s = time.time()
        try:
            text = task.decode("utf-8")
        except UnicodeDecodeError as exc:
            self._fail(task, f"task is not UTF-8 text: {exc}", attempts=0)
            return
        self.log.info("task taken", task=text)
        if self.keys.set is not None and self.options.zrem == "before":
            removed = self._until_answered(
                "removing the task from its set", lambda: self.store.zrem(task)
            )
            if removed is None:
                self._stopped_in_outage(text)
                return
        attempt = 1
        while True:
            context = TaskContext(
                text, attempt, self.options.worker_id, self.keys.queue, taken_at_s
            )
            try:
                self._call(context)
                failure: BaseException | None = None
            except BaseException as exc:  # SystemExit too: it fails this attempt only
                failure = exc
            if self.aborting.is_set():
                return  # the task was given back: its outcome here counts for nothing
            if failure is None:
                break
            if isinstance(failure, TaskFailed):
                self._fail(task, str(failure) or "the handler raised TaskFailed", attempt)
                return
            reason = failure_reason(failure)
            if attempt > self.options.retries:
                traceback = not isinstance(failure, AttemptFailed | HandlerTimedOut)
                self._fail(task, reason, attempt, with_traceback=traceback)
                return
            delay_s = min(self.options.retry_delay_s * 2 ** (attempt - 1), MAX_RETRY_DELAY_S)
            self.log.warning(
                "task failed, retrying",
                task=text,
                attempt=attempt,
                retry_in_s=delay_s,
                error=reason,
            )
            attempt += 1
            if self.stop.wait(delay_s):
                self._give_back(task, text)
                return
        self._done(task, text)

    def _call(self, context: TaskContext) -> None:
        """Run the handler on the task, in this thread, or with a timeout in another one,
        left running (abandoned) when it is late: Python cannot stop a thread."""
        args: tuple[object, ...] = (context.task, context) if self.with_context else (context.task,)
        timeout_s = self.options.timeout_s
        if timeout_s is None:
            self.handler(*args)
            return
        outcome: list[BaseException | None] = []

        def call() -> None:
            try:
                self.handler(*args)
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=call, name=f"handler of {context.task[:60]}", daemon=True)
        thread.start()
        thread.join(timeout_s)
        if thread.is_alive():
            self._abandon(thread, context.task)
            raise HandlerTimedOut(
                f"the handler ran past its timeout of {timeout_s:g} s (its thread was left running)"
            )
        if outcome[0] is not None:
            raise outcome[0]

    def _abandon(self, thread: threading.Thread, text: str) -> None:
        with self._abandoned_lock:
            self._abandoned = [t for t in self._abandoned if t.is_alive()]
            self._abandoned.append(thread)
            count = len(self._abandoned)
        self.log.warning("handler past its timeout, its thread left running", task=text)
        if count > self.options.max_abandoned:
            self.give_up(
                WorkerError(
                    f"{count} handler threads ran past their timeout and are still running "
                    f"(at most {self.options.max_abandoned}): stopping, to be restarted"
                )
            )

    def _done(self, task: bytes, text: str) -> None:
        notice = worker_store.Notice()  # so that a retry after a lost reply does not push again
        outcome = self._until_answered(
            "notifying", lambda: self.store.done(task, self.options.zrem == "after", notice)
        )
        if outcome is None:
            self._stopped_in_outage(text)
            return
        log_done(self.log, self.keys, text, *outcome)
        # After an outage, absent means the first try ran and its reply was lost.

    def _fail(self, task: bytes, reason: str, attempts: int, with_traceback: bool = False) -> None:
        text = task.decode("utf-8", "backslashreplace")
        # With zrem before, the set entry went at the take: one there now is a copy
        # queued again meanwhile, which must stay.
        zrem = self.options.zrem == "after"
        outcome = self._until_answered(
            "moving the task to the failed list",
            lambda: self.store.fail(task, reason, attempts, zrem),
        )
        if outcome is None:
            self._stopped_in_outage(text)
        elif outcome[0]:
            log_failed(self.log, self.keys, text, reason, with_traceback)

    def _give_back(self, task: bytes, text: str) -> None:
        if self._until_answered("giving the task back", lambda: self.store.release(task)) is None:
            self._stopped_in_outage(text)
        else:
            self.log.info("stopping: task given back to the queue before its retry", task=text)

    def _stopped_in_outage(self, text: str) -> None:
        log_stopped_in_outage(self.log, self.keys, text)


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, AttemptFailed | HandlerTimedOut):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def log_heartbeat_lost(
    log: Any, since_refresh_s: float, ttl_s: float, registered: bool, keys: WorkerKeys
) -> None:
    """Say why a refresh found the heartbeat gone: expired while Redis was out of reach,
    or lost by Redis with the registry (a restart without persistence, a failover)."""
    if since_refresh_s >= ttl_s:
        log.warning(
            "heartbeat expired while Redis was out of reach: a reaper may have put the "
            "tasks in hand back into the queue; they are not notified when done here",
            unreachable_s=round(since_refresh_s, 1),
            heartbeat_ttl_s=ttl_s,
        )
    elif not registered:
        log.warning(
            "Redis lost this worker's heartbeat and registration before they could "
            "expire (a restart without persistence, or a failover): registered again; "
            "tasks in hand that Redis lost with them are not notified when done here",
            since_refresh_s=round(since_refresh_s, 1),
        )
    else:
        log.warning(
            "this worker's heartbeat was deleted before it could expire: refreshed",
            heartbeat=keys.heartbeat,
        )


def log_reaped(log: Any, worker_id: str, moved: int) -> None:
    """Log what reap() did to another worker (-1: alive, nothing to say)."""
    if moved > 0:
        log.warning(
            "heartbeat of a worker expired: its tasks are back in the queue",
            dead_worker=worker_id,
            count=moved,
        )
    elif moved == 0:
        log.info("heartbeat of a worker expired: unregistered", dead_worker=worker_id)


# What a worker logs about a task's end, the same for threads (TaskLoop) and asyncio.


def log_done(log: Any, keys: WorkerKeys, text: str, done: bool, after_outage: bool) -> None:
    """The notice of a finished task: sent, or not needed any more."""
    if done:
        if keys.done_queue is None:
            log.info("task done", task=text)
        else:
            log.info("task done", task=text, done_queue=keys.done_queue)
    elif not after_outage:
        log.warning(
            "task done, but no longer in the taken list: it was put back into the queue "
            "(heartbeat expired?) and is done again elsewhere, so it is not notified here",
            task=text,
            taken=keys.taken,
        )


def log_failed(log: Any, keys: WorkerKeys, text: str, reason: str, with_traceback: bool) -> None:
    log.warning(
        "task moved to the failed list",
        task=text,
        reason=reason,
        failed=keys.failed,
        exc_info=with_traceback,
    )


def log_stopped_in_outage(log: Any, keys: WorkerKeys, text: str) -> None:
    log.warning(
        "stopped while Redis was unavailable: the task stays in the taken list, to be "
        "put back into the queue by a reaper",
        task=text,
        taken=keys.taken,
    )
