"""What `resc demo` shows: one line per happening as it comes, a live panel of where
things stand (on a terminal), and the summary. Holds the counts; does no I/O but print."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from resc.core.words import counted

EVENTS_QUEUE = "global/events"
TODO_QUEUE = "trt/plantA/todo-queue"
TODO_SET = "trt/plantA/todo-set"
RULE = "compute on acquisition"


class Happening(NamedTuple):
    kind: str  # event, repeat, task, dedup, take, finish, back
    who: str  # producer, resc, or a worker's name
    text: str  # the event or task; for "task": "<event> -> <task>"


@dataclass
class Counts:
    events: int = 0  # distinct events pushed
    repeats: int = 0  # events pushed a second time
    tasks: int = 0  # tasks pushed by resc
    deduplicated: int = 0  # events whose task was already in the set
    done: int = 0  # tasks finished by the workers
    back: int = 0  # done events processed by resc


_STYLES = {
    "event": "bold cyan",
    "repeat": "bold cyan",
    "task": "magenta",
    "dedup": "yellow",
    "take": "blue",
    "finish": "green",
    "back": "dim",
}


class DemoView:
    def __init__(self, console: Console, events: int, workers: tuple[str, ...]) -> None:
        self.console = console
        self.events = events
        self.counts = Counts()
        self.in_hand: dict[str, str] = dict.fromkeys(workers, "")
        self._announced: set[str] = set()  # tasks whose making was shown
        self._early_takes: dict[str, list[Happening]] = {}

    def introduce(self, url: str, config_path: Path) -> None:
        self.console.print(
            f"[bold]resc demo[/]: a private Redis server at {url}, resc on the example "
            f"config ({config_path}), two workers.\n"
            f"Rule '{RULE}': an event acq/<process>/<product> makes the task "
            "trt/<process>/<product> in the queue trt/<process>/todo-queue, deduplicated "
            "by the set trt/<process>/todo-set.\n"
            f"{counted(self.events, 'event')} {'is' if self.events == 1 else 'are'} pushed to "
            f"{EVENTS_QUEUE}; every third one twice. "
            f"Workers push each finished task back to {EVENTS_QUEUE}. Ctrl-C stops.\n",
            soft_wrap=True,
        )

    def record(self, h: Happening, elapsed_s: float) -> None:
        """Count the happening and print its line."""
        if h.kind == "take" and h.text not in self._announced:
            # The worker's thread and the channel's raced: show the task made first.
            self._early_takes.setdefault(h.text, []).append(h)
            return
        line = self._describe(h)
        self.console.print(
            Text.assemble(f"{elapsed_s:6.2f}s  ", (f"{h.who:<9}", _STYLES[h.kind]), line),
            soft_wrap=True,
        )
        if h.kind == "task":
            task = h.text.partition(" -> ")[2]
            self._announced.add(task)
            for take in self._early_takes.pop(task, []):
                self.record(take, elapsed_s)

    def _describe(self, h: Happening) -> str:
        c = self.counts
        if h.kind == "event":
            c.events += 1
            return f"pushes {h.text} to {EVENTS_QUEUE}"
        if h.kind == "repeat":
            c.repeats += 1
            return f"pushes {h.text} to {EVENTS_QUEUE} again"
        if h.kind == "task":
            c.tasks += 1
            event, _, task = h.text.partition(" -> ")
            return f"{event} matches '{RULE}': task {task} -> {TODO_QUEUE}"
        if h.kind == "dedup":
            c.deduplicated += 1
            return f"{h.text} again: its task is still in {TODO_SET}, so no new task"
        if h.kind == "take":
            self.in_hand[h.who] = h.text
            return f"takes {h.text}"
        if h.kind == "finish":
            c.done += 1
            self.in_hand[h.who] = ""
            return f"finished {h.text}: pushes it to {EVENTS_QUEUE} as a done event"
        c.back += 1
        return f"done event {h.text} processed: no rule matches it, the chain ends"

    def status(self, waiting: str) -> Panel:
        """The live panel; `waiting` tells the queues' lengths."""
        c = self.counts
        table = Table.grid(padding=(0, 2))
        table.add_row("events", f"{c.events} of {self.events} pushed, {c.repeats} twice")
        table.add_row("tasks", f"{c.tasks} made, {c.deduplicated} deduplicated")
        table.add_row("waiting", waiting)
        for name, task in self.in_hand.items():
            table.add_row(name, f"working on {task}" if task else "waiting for a task")
        table.add_row(
            "done",
            f"{counted(c.done, 'task')}, {counted(c.back, 'done event')} back through resc",
        )
        return Panel(table, title="now", title_align="left", expand=False)

    def summarize(self, finished: bool, elapsed_s: float) -> None:
        c = self.counts
        how = "" if finished else " (stopped early)"
        self.console.print(
            f"\n[bold]Summary: {counted(c.events, 'event')}, {counted(c.tasks, 'task')}, "
            f"{c.done} done[/] "
            f"in {elapsed_s:.1f} s{how}",
            soft_wrap=True,
        )
        self.console.print(
            f"  events pushed twice: {c.repeats}, deduplicated (no new task): {c.deduplicated}; "
            f"done events back through resc: {c.back}",
            soft_wrap=True,
        )
