"""A worker's taking threads: take a task, remove it from its set, run the handler with
retries, then notify it done or move it to the failed list (see worker.py)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from resc.connection.edge import reconnect_delay_s
from resc.core.errors import RedisUnavailable, RescError
from resc.worker.store import WorkerStore

Handler = Callable[[str], object]
T = TypeVar("T")

MAX_RETRY_DELAY_S = 300.0


class AttemptFailed(Exception):
    """Raise from a handler to fail this attempt with the message as the whole reason
    (other exceptions get their type name before it); retried like any exception."""


class TaskFailed(Exception):
    """Raise from a handler to send the task to the failed list at once, with no retry;
    the message is the reason recorded."""


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
class TaskOptions:
    zrem: Literal["before", "after"]
    retries: int
    retry_delay_s: float
    compatible: bool  # a taken list shared with other workers


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
    ) -> None:
        self.store = store
        self.keys = store.keys
        self.handler = handler
        self.options = options
        self.stop = stop
        self.give_up = give_up
        self.log = log
        # Takes are one at a time, so that after a lost connection the taken list can be
        # compared with the tasks in hand while no take is under way.
        self._take_lock = threading.Lock()
        self._in_hand: Counter[bytes] = Counter()
        self._in_hand_lock = threading.Lock()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                task = self._take()
                if task is not None:
                    self._process(task)
        except RescError as exc:
            self.give_up(exc)
        except Exception as exc:
            self.log.exception("worker thread crashed")
            self.give_up(WorkerError(f"internal error: {exc!r}"))

    def _until_answered(
        self, action: str, call: Callable[[], T], failures: int = 0
    ) -> tuple[T, bool] | None:
        return until_answered(action, call, self.stop, self.log, failures)

    def _take(self) -> bytes | None:
        with self._take_lock:
            if self.stop.is_set():
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
        try:
            text = task.decode("utf-8")
        except UnicodeDecodeError as exc:
            self._fail(task, f"task is not UTF-8 text: {exc}")
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
            try:
                self.handler(text)
                break
            except TaskFailed as exc:
                self._fail(task, str(exc) or "the handler raised TaskFailed")
                return
            except Exception as exc:
                reason = _reason(exc)
                if attempt > self.options.retries:
                    traceback = not isinstance(exc, AttemptFailed)
                    self._fail(task, reason, with_traceback=traceback)
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

    def _done(self, task: bytes, text: str) -> None:
        outcome = self._until_answered(
            "notifying", lambda: self.store.done(task, self.options.zrem == "after")
        )
        if outcome is None:
            self._stopped_in_outage(text)
            return
        done, after_outage = outcome
        if done:
            self.log.info("task done", task=text, done_queue=self.keys.done_queue)
        elif not after_outage:
            self.log.warning(
                "task done, but no longer in the taken list: it was put back into the queue "
                "(heartbeat expired?) and is done again elsewhere, so it is not notified here",
                task=text,
                taken=self.keys.taken,
            )
        # After an outage, absent means the first try ran and its reply was lost.

    def _fail(self, task: bytes, reason: str, with_traceback: bool = False) -> None:
        text = task.decode("utf-8", "backslashreplace")
        outcome = self._until_answered(
            "moving the task to the failed list", lambda: self.store.fail(task, reason)
        )
        if outcome is None:
            self._stopped_in_outage(text)
        elif outcome[0]:
            self.log.warning(
                "task moved to the failed list",
                task=text,
                reason=reason,
                failed=self.keys.failed,
                exc_info=with_traceback,
            )

    def _give_back(self, task: bytes, text: str) -> None:
        if self._until_answered("giving the task back", lambda: self.store.release(task)) is None:
            self._stopped_in_outage(text)
        else:
            self.log.info("stopping: task given back to the queue before its retry", task=text)

    def _stopped_in_outage(self, text: str) -> None:
        self.log.warning(
            "stopped while Redis was unavailable: the task stays in the taken list, to be "
            "put back into the queue by a reaper",
            task=text,
            taken=self.keys.taken,
        )


def _reason(exc: Exception) -> str:
    if isinstance(exc, AttemptFailed):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
