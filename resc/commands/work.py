"""`resc work ... -- COMMAND ARGS`: a worker with no code, running a command per task."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from types import FrameType

from resc.core.errors import EXIT_FATAL, EXIT_FORCED, EXIT_OK, EXIT_USAGE

NAME = "work"
HELP = "run a command once per task of a queue: a worker with no code"

EPILOG = """\
The command gets the task as {task} in its arguments and as RESC_TASK in its
environment; with --match, each named group of the regex too ({process_id},
RESC_PROCESS_ID). Exit status 0: the task is done and pushed to the done queue.
Anything else: it is retried, then moved to the failed list (QUEUE/failed) with the
reason. Its output goes to the log (shown by default; RESC_LOG=warn hides it).
Example:

  resc work --redis redis://127.0.0.1:6379/0 --queue trt/plantA/todo-queue \\
      --set trt/plantA/todo-set --match '^trt/(?P<process_id>\\w+)/(?P<product_id>\\w+)$' \\
      -- ./compute.sh {product_id}
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--redis", required=True, metavar="URL", help="Redis URL")
    parser.add_argument("--queue", required=True, help="the todo queue to take tasks from")
    parser.add_argument("--set", help="the queue's dedup set, from which each task is removed")
    parser.add_argument(
        "--zrem",
        choices=("before", "after"),
        default="before",
        help="remove the task from the set before the command runs (it may then be queued "
        "again meanwhile) or after it (default: before)",
    )
    parser.add_argument(
        "--done",
        default="global/events",
        metavar="QUEUE",
        help="where finished tasks are pushed as events (default: global/events)",
    )
    parser.add_argument("--no-done", action="store_true", help="push no notice when done")
    parser.add_argument("--match", metavar="REGEX", help="named groups become placeholders")
    parser.add_argument(
        "--concurrency", type=int, default=1, metavar="N", help="commands run at once (default: 1)"
    )
    parser.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="kill a command running longer"
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=3,
        metavar="N",
        help="more attempts after a failure (default: 3)",
    )
    parser.add_argument(
        "--retry-delay",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="before the first retry; doubles for each next one (default: 1)",
    )
    parser.add_argument("--failed", metavar="LIST", help="default: QUEUE/failed")
    parser.add_argument(
        "--worker-id", metavar="ID", help="default: host, process id and a random part"
    )
    parser.add_argument(
        "--heartbeat-ttl",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="a worker silent this long is dead: its tasks go back to the queue (default: 30)",
    )
    parser.add_argument(
        "--taken",
        metavar="LIST",
        help="compatible mode: take into this fixed list shared with other workers, as the "
        "original protocol does (no heartbeat, no reaper)",
    )
    parser.add_argument(
        "command", nargs=argparse.REMAINDER, metavar="-- COMMAND ARGS", help="run per task"
    )


def _usage_error(message: str) -> int:
    print(f"resc work: {message}", file=sys.stderr)
    return EXIT_USAGE


def main(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from resc.config.models import RedisConfig
    from resc.config.regex import compile_regex
    from resc.connection.edge import redact_url
    from resc.core import logs
    from resc.worker import Worker, WorkerError
    from resc.worker.command import CommandHandler

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        return _usage_error("no command: put it after --, e.g. -- echo {task}")
    if args.redis == "embedded":
        return _usage_error("--redis embedded: give the URL that `resc run` printed")
    try:
        RedisConfig(url=args.redis)
    except ValidationError as exc:
        reason = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
        return _usage_error(f"--redis {redact_url(args.redis)}: {reason}")
    try:
        match = compile_regex(args.match) if args.match is not None else None
    except ValueError as exc:
        return _usage_error(f"--match {args.match}: {exc}")
    try:
        handler = CommandHandler(command, match, args.timeout)
        worker = Worker(
            args.redis,
            queue=args.queue,
            set=args.set,
            done_queue=None if args.no_done else args.done,
            handler=handler,
            zrem=args.zrem,
            concurrency=args.concurrency,
            retries=args.retries,
            retry_delay_s=args.retry_delay,
            failed_queue=args.failed,
            worker_id=args.worker_id,
            heartbeat_ttl_s=args.heartbeat_ttl,
            taken_queue=args.taken,
        )
    except ValueError as exc:
        return _usage_error(str(exc))

    if not (os.environ.get("RESC_LOG") or os.environ.get("RUST_LOG")):
        # A worker shows its tasks and its command's output unless told otherwise.
        logs.configure({**os.environ, "RESC_LOG": "info"})

    def on_signal(signum: int, _: FrameType | None) -> None:
        if worker.signalled(signum) == "forced":
            # Given back first: the killed commands' failures then count for nothing.
            worker.abort()
            handler.kill_all()
            os._exit(EXIT_FORCED)

    # SIGHUP too: the commands run in their own sessions, so a closed terminal would
    # leave them running without their worker.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    worker.start()
    try:
        # Not one blocking wait: a signal the kernel delivers to another thread (a second
        # one sent right after the first) runs its handler only once this thread wakes.
        while not worker.wait(0.1):
            pass
    except WorkerError as exc:
        print(f"resc work: {exc}", file=sys.stderr)
        return EXIT_FATAL
    return EXIT_OK
