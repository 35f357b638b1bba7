"""`resc demo`: the whole system in one process, shown live.

A private Redis server, resc's daemon on the example config, two workers of the worker
library, and a producer pushing `acq/plantA/N` events. What happens is read from where
it happens: the config's listener channel (tasks pushed, events finished), the workers'
handler (tasks taken and finished), the producer (events pushed). demo_view.py shows it.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import threading
import time
from pathlib import Path
from types import FrameType

import redis
from rich.console import Console
from rich.live import Live
from rich.panel import Panel

from resc.config.load import load_config
from resc.core.errors import EXIT_FATAL, EXIT_FORCED, EXIT_OK, RescError
from resc.dev.demo_view import EVENTS_QUEUE, TODO_QUEUE, TODO_SET, DemoView, Happening
from resc.dev.embedded import EmbeddedRedis
from resc.engine.daemon import Daemon
from resc.worker import Worker

# The example config (configs/example.hjson) with its comments left out; a test keeps
# the two equal.
CONFIG = """\
{
  redis: { url: "%(url)s" }
  listener_channel: events
  watchers: [
    {
      input_queue: global/events
      taken_queue: global/taken
      rules: [
        {
          name: compute on acquisition
          on: ^acq/(?P<process_id>\\w+)/(?P<product_id>\\w+)$
          make: {
            task: trt/${process_id}/${product_id}
            queue: trt/${process_id}/todo-queue
            set: trt/${process_id}/todo-set
          }
        }
      ]
    }
  ]
}
"""
TAKEN_QUEUE = "global/taken"
CHANNEL = "events"
WORKERS = ("worker-1", "worker-2")

EVENT_INTERVAL_S = 0.3
WORK_S = (0.4, 1.0)  # a task takes a random time in this range
REPEAT_EVERY = 3  # every third event is pushed twice, to show deduplication
STALL_S = 30.0  # the demo gives up when nothing happens for this long


class Demo:
    def __init__(self, server: EmbeddedRedis, events: int, console: Console) -> None:
        self.server = server
        self.events = events
        self.console = console
        self.view = DemoView(console, events, WORKERS)
        self.stop = threading.Event()
        self.stop_requested = False  # by a signal: stopping early is then no failure
        self.happenings: queue.Queue[Happening] = queue.Queue()
        self.started = time.monotonic()
        self.client = redis.Redis.from_url(server.url)
        self._produced = threading.Event()

    # --- the parts ----------------------------------------------------------------------

    def _produce(self) -> None:
        for n in range(1, self.events + 1):
            event = f"acq/plantA/{n}"
            repeated = n % REPEAT_EVERY == 0
            self.client.lpush(EVENTS_QUEUE, *([event, event] if repeated else [event]))
            self.happenings.put(Happening("event", "producer", event))
            if repeated:
                self.happenings.put(Happening("repeat", "producer", event))
            if self.stop.wait(EVENT_INTERVAL_S):
                break
        self._produced.set()

    def _listen(self, pubsub: redis.client.PubSub) -> None:
        """Turns the listener channel's messages into happenings. resc publishes, per
        event, a TRIGGER per task it pushed, then DONE: a DONE with no TRIGGER before it
        is an event that made no new task."""
        triggered: dict[str, int] = {}
        prefix = f"{TAKEN_QUEUE} "
        while not self.stop.is_set():
            message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is None:
                continue
            text = message["data"].decode("utf-8", "replace").removeprefix(prefix)
            kind, _, rest = text.partition(" ")
            if kind == "TRIGGER":
                event, _, task = rest.partition(" -> ")
                triggered[event] = triggered.get(event, 0) + 1
                self.happenings.put(Happening("task", "resc", f"{event} -> {task}"))
            elif kind == "DONE" and rest.startswith("acq/"):
                if triggered.get(rest):
                    triggered[rest] -= 1
                else:
                    self.happenings.put(Happening("dedup", "resc", rest))
            elif kind == "DONE":
                self.happenings.put(Happening("back", "resc", rest))

    def _worker(self, name: str) -> Worker:
        def work(task: str) -> None:
            self.happenings.put(Happening("take", name, task))
            self.stop.wait(random.uniform(*WORK_S))
            self.happenings.put(Happening("finish", name, task))

        return Worker(
            self.server.url,
            queue=TODO_QUEUE,
            set=TODO_SET,
            # Out of the set only once done: an event repeated meanwhile makes no task.
            zrem="after",
            done_queue=EVENTS_QUEUE,
            handler=work,
            worker_id=name,
        )

    # --- running ------------------------------------------------------------------------

    def run(self) -> int:
        """Everything, from start to summary; the exit status."""
        config_path = Path(self.server.dir) / "example.hjson"
        config_path.write_text(CONFIG % {"url": self.server.url})
        daemon = Daemon(load_config(config_path))
        pubsub = self.client.pubsub()  # type: ignore[no-untyped-call, unused-ignore]
        pubsub.subscribe(CHANNEL)
        workers = [self._worker(name) for name in WORKERS]
        threads = [
            threading.Thread(target=self._listen, args=(pubsub,), daemon=True),
            threading.Thread(target=self._produce, daemon=True),
        ]
        self.view.introduce(self.server.url, config_path)
        daemon.start()
        for worker in workers:
            worker.start()
        for thread in threads:
            thread.start()
        errors: list[str] = []
        try:
            finished = self._show()
            elapsed_s = time.monotonic() - self.started
        finally:
            self.stop.set()
            for worker in workers:
                worker.stop()
            daemon.stop.set()
            for worker in workers:
                try:
                    worker.wait()
                except RescError as exc:
                    errors.append(f"{worker.worker_id}: {exc}")
            if daemon.wait() != EXIT_OK:
                errors.append("resc stopped on an error (see above)")
            for thread in threads:
                thread.join()
            pubsub.close()
            self.client.close()
        self.view.summarize(finished, elapsed_s)
        for error in errors:
            self.console.print(f"[red]{error}[/]", soft_wrap=True)
        ok = (finished or self.stop_requested) and not errors
        return EXIT_OK if ok else EXIT_FATAL

    def _complete(self) -> bool:
        c = self.view.counts
        every_event_processed = c.tasks + c.deduplicated == c.events + c.repeats
        return self._produced.is_set() and every_event_processed and c.back == c.tasks

    def _show(self) -> bool:
        """Show what happens until every event's tasks are done and back, or a stop.
        True when complete."""
        live = None
        if self.console.is_terminal:
            # Transient: the summary replaces the panel.
            live = Live(self._status(), console=self.console, refresh_per_second=8, transient=True)
            live.start()
        last_happening = time.monotonic()
        try:
            while not self._complete():
                if self.stop.is_set():
                    return False
                try:
                    happening = self.happenings.get(timeout=0.1)
                except queue.Empty:
                    if time.monotonic() - last_happening > STALL_S:
                        self.console.print(
                            f"[red]nothing happened for {STALL_S:g} s: the demo gives up[/]"
                        )
                        return False
                else:
                    last_happening = time.monotonic()
                    self.view.record(happening, last_happening - self.started)
                if live is not None:
                    live.update(self._status())
            return True
        finally:
            if live is not None:
                live.stop()

    def _status(self) -> Panel:
        try:
            waiting = (
                f"{self.client.llen(EVENTS_QUEUE)} in {EVENTS_QUEUE}, "
                f"{self.client.llen(TODO_QUEUE)} in {TODO_QUEUE}"
            )
        except redis.RedisError:
            waiting = "?"
        return self.view.status(waiting)


def run(events: int) -> int:
    """The demo with `events` events; the exit status."""
    from resc.dev.private_redis import start_private_redis

    server = start_private_redis()
    demo = Demo(server, events, Console(highlight=False))

    def on_signal(signum: int, _: FrameType | None) -> None:
        if demo.stop.is_set():
            server.close(at_once=True)
            os._exit(EXIT_FORCED)
        demo.stop_requested = True
        demo.stop.set()

    # SIGHUP too: a closed terminal must not leave the server running.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    try:
        return demo.run()
    finally:
        server.close()
