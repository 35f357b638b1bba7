"""Workers: the take / do / notify protocol for Python handlers, safe by default.

    from resc.worker import Worker, TaskFailed, AttemptFailed
    from resc.worker import AsyncWorker  # the same, in asyncio

The library (worker), its taking threads (tasks), its Redis side with the Lua scripts in
lua/ (store), the asyncio flavour (aio, aio_tasks, aio_store), the settings both check
(settings), and the handler behind `resc work` that runs a command per task (command).
May import resc.connection, resc.config and resc.core; never resc.engine, its peer: a
worker needs no daemon code."""

from resc.worker.aio import AsyncHandler, AsyncWorker
from resc.worker.worker import (
    AttemptFailed,
    Handler,
    TaskContext,
    TaskFailed,
    Worker,
    WorkerError,
)

__all__ = [
    "AsyncHandler",
    "AsyncWorker",
    "AttemptFailed",
    "Handler",
    "TaskContext",
    "TaskFailed",
    "Worker",
    "WorkerError",
]
