"""Workers in asyncio: the same protocol, keys, Lua scripts and guarantees as Worker, on
redis.asyncio, with `async def` handlers.

    from resc.worker import AsyncWorker

    worker = AsyncWorker("redis://127.0.0.1:6379/0", queue="trt/plantA/todo-queue")

    @worker.handler
    async def compute(task: str) -> None:
        ...

    asyncio.run(worker.run())  # until SIGINT or SIGTERM, then after the tasks in hand

Unlike threads, a handler past `timeout_s` is cancelled, and a second signal cancels the
handlers in hand; their tasks are given back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import signal
import threading
import time
from collections import Counter
from typing import Any, Literal, TypeVar

import redis.asyncio as aioredis

from resc.core.errors import RedisUnavailable, RescError, StoreError
from resc.core.logs import get_logger
from resc.worker.aio_store import AsyncWorkerStore, connection_kwargs
from resc.worker.aio_tasks import AsyncHandler, AsyncTaskLoop, until_answered
from resc.worker.settings import worker_settings
from resc.worker.store import check_client
from resc.worker.tasks import (
    Registration,
    WorkerError,
    log_heartbeat_lost,
    log_reaped,
    wants_context,
)
from resc.worker.worker import SCAN_COUNT, SCAN_STEPS_PER_REAP, SIGNAL_REPEAT_S

__all__ = ["AsyncHandler", "AsyncWorker"]

log = get_logger("resc.worker")

H = TypeVar("H", bound=AsyncHandler)
T = TypeVar("T")


class AsyncWorker:
    """Takes tasks from `queue` and awaits the handler on each, `concurrency` at once.

    The options are Worker's; `client=` and `pool=` are redis.asyncio ones, with the same
    requirements. Create, run and stop it in one event loop.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        queue: str,
        client: aioredis.Redis | None = None,
        pool: aioredis.ConnectionPool | None = None,
        set: str | None = None,
        done_queue: str | None = "global/events",
        handler: AsyncHandler | None = None,
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
            client = aioredis.Redis(connection_pool=pool)
        if client is not None:
            check_client(connection_kwargs(client))
        if handler is not None:
            _check_handler(handler)
        self.worker_id = settings.worker_id
        self.keys = settings.keys
        self.options = settings.options
        self.concurrency = concurrency
        self.heartbeat_ttl_s = heartbeat_ttl_s
        self.store = AsyncWorkerStore(
            self.keys, f"resc-worker-{self.worker_id}", url=redis_url, client=client
        )
        self.registration = Registration(None if taken_queue else heartbeat_ttl_s)
        self.log = log.bind(worker=self.worker_id, queue=queue)
        self._handler = handler
        self._with_context = handler is not None and wants_context(handler)
        self._holder = settings.holder
        self._stop = asyncio.Event()
        self._fatal: RescError | None = None
        self._signalled_at: float | None = None
        self._forced = False
        self._keeper: asyncio.Task[None] | None = None
        self._takers: list[asyncio.Task[None]] = []
        self._tasks: AsyncTaskLoop | None = None
        self._scan_cursor = 0

    @property
    def compatible(self) -> bool:
        """True in compatible mode: a fixed, shared taken list, no heartbeat, no reaper."""
        return self.options.compatible

    def handler(self, function: H) -> H:
        """Decorator: register `async def function(task)` (or `(task, context)`)."""
        _check_handler(function)
        self._handler = function
        self._with_context = wants_context(function)
        return function

    def stop(self) -> None:
        """Stop once the tasks in hand are finished (call it in the worker's loop)."""
        self._stop.set()

    async def run(self, *, signals: bool = True) -> None:
        """Work until stop(), or SIGINT / SIGTERM with `signals` in the main thread (a
        second one cancels the handlers and gives their tasks back). Cancelling run()
        does the same. Raises WorkerError when the worker stopped on an error."""
        if self._handler is None:
            raise WorkerError(
                "no handler: pass handler= or decorate a function with @worker.handler"
            )
        if self._keeper is not None:
            raise WorkerError("this worker was already started")
        loop = asyncio.get_running_loop()
        installed: list[int] = []
        if signals and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, self._on_signal, signum)
                installed.append(signum)
        self._keeper = asyncio.create_task(self._keep())
        try:
            await asyncio.shield(self._keeper)
        except asyncio.CancelledError:
            if self._keeper.cancelling() == 0:  # once: a second cancel would cut its cleanup
                self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            current = asyncio.current_task()
            if not (self._forced and current is not None and current.cancelling() == 0):
                raise
        finally:
            for number in installed:
                loop.remove_signal_handler(number)
        if self._fatal is not None:
            raise WorkerError(str(self._fatal))

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        now = time.monotonic()
        if self._signalled_at is None:
            self._signalled_at = now
            self.log.info("stopping after the tasks in hand", signal=name)
            self._stop.set()
        elif now - self._signalled_at >= SIGNAL_REPEAT_S and not self._forced:
            self.log.warning(
                "second signal: cancelling the tasks in hand and giving them back", signal=name
            )
            self._forced = True
            if self._keeper is not None:
                self._keeper.cancel()

    # --- the keeper --------------------------------------------------------------------

    async def _keep(self) -> None:
        joined = False
        cancelled = False
        try:
            if await until_answered(self._stop, self.log, "connecting", self.store.connect) is None:
                return
            if not self.compatible:
                joined = await self._join()
                if not joined:
                    return
            self.log.info("worker started", concurrency=self.concurrency, taken=self.keys.taken)
            assert self._handler is not None
            self._tasks = AsyncTaskLoop(
                self.store,
                self._handler,
                self._with_context,
                self.options,
                self._stop,
                self._give_up,
                self.log,
                self.registration,
            )
            self._takers = [
                asyncio.create_task(self._tasks.run(), name=f"worker {self.worker_id} #{n}")
                for n in range(self.concurrency)
            ]
            await self._beat_and_reap()
        except asyncio.CancelledError:
            cancelled = True
            raise
        except RescError as exc:
            self._give_up(exc)
        finally:
            self._stop.set()
            if not cancelled:
                try:
                    await asyncio.gather(*self._takers, return_exceptions=True)  # in hand: done
                except asyncio.CancelledError:  # a second signal while they do
                    cancelled = True
            if cancelled:
                for taker in self._takers:
                    taker.cancel()
                await asyncio.gather(*self._takers, return_exceptions=True)
                await self._give_back_all()
            elif joined:
                await self._leave()
            await self.store.close()
            self.log.info("worker stopped")
        if cancelled:
            raise asyncio.CancelledError

    def _give_up(self, exc: RescError) -> None:
        if self._fatal is None:
            self._fatal = exc
            self.log.error("worker stopping on an error", error=str(exc))
        self._stop.set()

    async def _join(self) -> bool:
        ttl_ms = self._ttl_ms()
        sent_at = time.monotonic()

        async def join() -> int:
            nonlocal sent_at
            sent_at = time.monotonic()
            return await self.store.join(self.worker_id, ttl_ms, self._holder)

        answer = await until_answered(self._stop, self.log, "registering", join)
        if answer is None:
            return False
        if answer[0] < 0:
            raise WorkerError(
                f"worker id {self.worker_id!r} is in use on {self.keys.queue}: its heartbeat "
                f"{self.keys.heartbeat} is alive (if that worker is dead, it expires within "
                f"{self.heartbeat_ttl_s:g} s)"
            )
        self.registration.refreshed_at(sent_at)
        if answer[0]:
            self.log.warning("tasks left taken by a previous run put back", count=answer[0])
        return True

    def _ttl_ms(self) -> int:
        return max(1, round(self.heartbeat_ttl_s * 1000))

    async def _beat_and_reap(self) -> None:
        """As Worker's: reap, refresh three times per TTL, watch the taking tasks."""
        beat_s = self.heartbeat_ttl_s / 3
        failing = False
        beats = 0
        while True:
            try:
                if not self.compatible and beats % 2 == 0:
                    await self._reap()
                if await self._wait_watching(beat_s):
                    return
                if self.compatible:
                    continue
                sent_at = time.monotonic()
                since_refresh_s = self.registration.since_refresh_s()
                alive, registered = await self.store.beat(
                    self.worker_id, self._ttl_ms(), self._holder
                )
                self.registration.refreshed_at(sent_at)
                beats += 1
            except RedisUnavailable as exc:
                if not failing:
                    self.log.warning("Redis unavailable, retrying", error=str(exc))
                failing = True
                if await self._wait_watching(beat_s):
                    return
                continue
            if failing:
                self.log.info("Redis is back")
            if not alive:
                log_heartbeat_lost(
                    self.log, since_refresh_s, self.heartbeat_ttl_s, registered, self.keys
                )
            failing = False

    async def _wait_watching(self, wait_s: float) -> bool:
        """Wait up to `wait_s`; True when the worker is to stop (a taking task ended)."""
        waiters = [asyncio.ensure_future(self._stop.wait()), *self._takers]
        done, _ = await asyncio.wait(waiters, timeout=wait_s, return_when="FIRST_COMPLETED")
        waiters[0].cancel()
        if self._stop.is_set():
            return True
        if done:
            ended = next(t for t in self._takers if t.done())
            self._give_up(WorkerError(f"a taking task ended: {ended.get_name()}"))
            return True
        return False

    async def _reap(self) -> None:
        seen = {self.worker_id}
        for worker_id in await self.store.worker_ids():
            if worker_id not in seen:  # never itself: its heartbeat may have come back
                seen.add(worker_id)
                log_reaped(self.log, worker_id, await self.store.reap(worker_id))
        for _ in range(SCAN_STEPS_PER_REAP):
            self._scan_cursor, found = await self.store.scan_taken(self._scan_cursor, SCAN_COUNT)
            for worker_id in found:
                if worker_id not in seen:
                    seen.add(worker_id)
                    log_reaped(self.log, worker_id, await self.store.reap(worker_id))
            if self._scan_cursor == 0:
                break

    async def _leave(self) -> None:
        try:
            moved = await self.store.reap(self.worker_id, leaving=True)
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

    async def _give_back_all(self) -> None:
        """After the handlers were cancelled: their tasks back into the queue."""
        try:
            if self.compatible:
                in_hand = self._tasks.in_hand if self._tasks is not None else Counter()
                for task in list(in_hand.elements()):
                    await self.store.release(task)
            else:
                await self.store.reap(self.worker_id, leaving=True)
        except StoreError as exc:
            self.log.warning(
                "could not give the tasks in hand back: a reaper re-queues them once the "
                "heartbeat expires",
                error=str(exc),
                taken=self.keys.taken,
            )
            return
        self.log.info("tasks in hand given back to the queue")


def _check_handler(handler: Any) -> None:
    wants_context(handler)
    if not inspect.iscoroutinefunction(handler) and not inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004  # an object with async __call__
    ):
        raise TypeError(
            f"the handler {getattr(handler, '__name__', handler)!r} of an AsyncWorker must be "
            "an async function (async def)"
        )
