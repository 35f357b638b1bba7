"""An AsyncWorker's taking tasks: take a task, remove it from its set, await the handler
with retries (and a timeout, by cancelling), then notify it done or move it to the failed
list; as tasks.TaskLoop does in threads."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from resc.connection.edge import reconnect_delay_s
from resc.core.errors import RedisUnavailable, RescError
from resc.worker import store as worker_store
from resc.worker.aio_store import AsyncWorkerStore
from resc.worker.tasks import (
    MAX_RETRY_DELAY_S,
    AttemptFailed,
    HandlerTimedOut,
    Registration,
    TaskContext,
    TaskFailed,
    TaskOptions,
    failure_reason,
    log_done,
    log_failed,
    log_stopped_in_outage,
)

# `async def handler(task)`, or `async def handler(task, context)`.
AsyncHandler = Callable[..., Awaitable[object]]
T = TypeVar("T")


async def until_answered(
    stop: asyncio.Event,
    log: Any,
    action: str,
    call: Callable[[], Awaitable[T]],
    failures: int = 0,
) -> tuple[T, bool] | None:
    """As tasks.until_answered: None when `stop` is set while Redis is unavailable."""
    while True:
        try:
            result = await call()
        except RedisUnavailable as exc:
            if failures == 0:
                log.warning("Redis unavailable, retrying", action=action, error=str(exc))
            delay_s = reconnect_delay_s(failures)
            failures += 1
            if await stopped_within(stop, delay_s):
                return None
            continue
        if failures:
            log.info("Redis is back", action=action)
        return result, failures > 0


async def stopped_within(stop: asyncio.Event, delay_s: float) -> bool:
    """Wait up to `delay_s`; True as soon as `stop` is set."""
    try:
        await asyncio.wait_for(stop.wait(), delay_s)
    except TimeoutError:
        return False
    return True


class AsyncTaskLoop:
    """What the taking tasks of one AsyncWorker share. Each awaits `run()` until `stop`."""

    def __init__(
        self,
        store: AsyncWorkerStore,
        handler: AsyncHandler,
        with_context: bool,
        options: TaskOptions,
        stop: asyncio.Event,
        give_up: Callable[[RescError], None],
        log: Any,
        registration: Registration,
    ) -> None:
        self.store = store
        self.keys = store.keys
        self.handler = handler
        self.with_context = with_context
        self.options = options
        self.stop = stop
        self.give_up = give_up
        self.log = log
        self.registration = registration
        # Takes are one at a time, as in TaskLoop, for the recovery of a lost take.
        self.take_lock = asyncio.Lock()
        self.in_hand: Counter[bytes] = Counter()

    async def run(self) -> None:
        try:
            while not self.stop.is_set():
                task = await self._take()
                if task is not None:
                    try:
                        await self._do(task)
                    finally:
                        self.in_hand[task] -= 1
                        if self.in_hand[task] <= 0:
                            del self.in_hand[task]
        except RescError as exc:
            self.give_up(exc)

    async def _take(self) -> bytes | None:
        async with self.take_lock:
            if self.stop.is_set():
                return None
            if not self.registration.alive():
                # As Worker: a task taken while a reaper may have forgotten this worker
                # could be stranded. Wait for the next heartbeat.
                await stopped_within(self.stop, min(0.1, worker_store.TAKE_BLOCK_S))
                return None
            try:
                task = await self.store.take()
            except RedisUnavailable as exc:
                self.log.warning("Redis unavailable, retrying", error=str(exc))
                await until_answered(
                    self.stop, self.log, "re-reading the taken list", self._recover_lost_take, 1
                )
                return None
            if task is not None:
                self.in_hand[task] += 1
            return task

    async def _recover_lost_take(self) -> None:
        """As TaskLoop: give back the tasks of the taken list that no task holds."""
        if self.options.compatible:
            self.log.warning(
                "a take may have happened with its reply lost: in compatible mode that task "
                "stays in the shared taken list until it is recovered by hand",
                taken=self.keys.taken,
            )
            return
        orphans = Counter(await self.store.taken_tasks()) - self.in_hand
        for task, count in orphans.items():
            for _ in range(count):
                if await self.store.release(task):
                    self.log.warning("task taken while the connection dropped put back", task=task)

    async def _do(self, task: bytes) -> None:
        taken_at_s = time.time()
        try:
            text = task.decode("utf-8")
        except UnicodeDecodeError as exc:
            await self._fail(task, f"task is not UTF-8 text: {exc}", attempts=0)
            return
        self.log.info("task taken", task=text)
        if self.keys.set is not None and self.options.zrem == "before":
            removed = await until_answered(
                self.stop, self.log, "removing the task from its set", lambda: self.store.zrem(task)
            )
            if removed is None:
                self._stopped_in_outage(text)
                return
        attempt = 1
        while True:
            context = TaskContext(
                text, attempt, self.options.worker_id, self.keys.queue, taken_at_s
            )
            failure = await self._attempt(context)
            if failure is None:
                break
            if isinstance(failure, TaskFailed):
                await self._fail(task, str(failure) or "the handler raised TaskFailed", attempt)
                return
            reason = failure_reason(failure)
            if attempt > self.options.retries:
                traceback = not isinstance(failure, AttemptFailed | HandlerTimedOut)
                await self._fail(task, reason, attempt, with_traceback=traceback)
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
            if await stopped_within(self.stop, delay_s):
                await self._give_back(task, text)
                return
        await self._done(task, text)

    async def _give_back(self, task: bytes, text: str) -> None:
        given = await until_answered(
            self.stop, self.log, "giving the task back", lambda: self.store.release(task)
        )
        if given is None:
            self._stopped_in_outage(text)
        else:
            self.log.info("stopping: task given back to the queue before its retry", task=text)

    async def _attempt(self, context: TaskContext) -> BaseException | None:
        """Await the handler once: what it raised, or None. A cancellation of this worker
        passes through; the handler's own CancelledError is a failure like any other."""
        args = (context.task, context) if self.with_context else (context.task,)
        timeout_s = self.options.timeout_s
        try:
            if timeout_s is None:
                await self.handler(*args)
            else:
                try:
                    await asyncio.wait_for(self.handler(*args), timeout_s)
                except TimeoutError:
                    return HandlerTimedOut(
                        f"the handler ran past its timeout of {timeout_s:g} s and was cancelled"
                    )
        except asyncio.CancelledError as exc:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            return exc
        except BaseException as exc:  # SystemExit too: it fails this attempt only
            return exc
        return None

    async def _done(self, task: bytes, text: str) -> None:
        notice = worker_store.Notice()  # so that a retry after a lost reply does not push again
        outcome = await until_answered(
            self.stop,
            self.log,
            "notifying",
            lambda: self.store.done(task, self.options.zrem == "after", notice),
        )
        if outcome is None:
            self._stopped_in_outage(text)
            return
        log_done(self.log, self.keys, text, *outcome)

    async def _fail(
        self, task: bytes, reason: str, attempts: int, with_traceback: bool = False
    ) -> None:
        text = task.decode("utf-8", "backslashreplace")
        zrem = self.options.zrem == "after"  # as TaskLoop._fail
        outcome = await until_answered(
            self.stop,
            self.log,
            "moving the task to the failed list",
            lambda: self.store.fail(task, reason, attempts, zrem),
        )
        if outcome is None:
            self._stopped_in_outage(text)
        elif outcome[0]:
            log_failed(self.log, self.keys, text, reason, with_traceback)

    def _stopped_in_outage(self, text: str) -> None:
        log_stopped_in_outage(self.log, self.keys, text)
