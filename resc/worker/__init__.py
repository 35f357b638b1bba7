"""Workers: the take / do / notify protocol for Python handlers, safe by default.

    from resc.worker import Worker, TaskFailed, AttemptFailed

The library (worker), its taking threads (tasks), its Redis side with the Lua scripts in
lua/ (store), and the handler behind `resc work` that runs a command per task (command).
May import resc.connection, resc.config and resc.core; never resc.engine, its peer: a
worker needs no daemon code."""

from resc.worker.worker import (
    AttemptFailed,
    Handler,
    TaskContext,
    TaskFailed,
    Worker,
    WorkerError,
)

__all__ = ["AttemptFailed", "Handler", "TaskContext", "TaskFailed", "Worker", "WorkerError"]
