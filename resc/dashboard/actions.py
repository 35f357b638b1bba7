"""The failed lists as the dashboard shows them, and what it does to them: requeue or
delete one copy, every copy, or those a filter selects, through resc.ops.failed (one
Lua script per copy, safe while the daemon and workers run). Every action is logged,
with who asked (the client's address), and kept in a short journal the page shows."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from resc.config.models import Config
from resc.config.regex import Regex, compile_regex
from resc.core.logs import get_logger
from resc.ops.failed import FailedItem, FailedList, FailedStore, Outcome

log = get_logger("resc.dashboard")

MOST_LISTS = 1000
MOST_SHOWN = 200
# What one action looks at, per list: as `resc failed --limit`.
MOST_ACTED_ON = 10_000
JOURNAL = 50
# How much of an item's text the log and the journal keep.
SHOWN_CHARS = 200


class ActionError(Exception):
    """A request the dashboard refuses (400), with why."""


class FailedAction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["requeue", "delete"]
    select: Literal["one", "all", "filter"]
    list: str | None = Field(None, description="one failed list; none: every one")
    text: str | None = Field(None, description="with select one: the copy's text")
    match: str | None = Field(None, max_length=1000, description="RE2 regex on the text")
    reason: str | None = Field(None, max_length=1000, description="RE2 regex on the reason")
    confirm: bool = False


@dataclass(frozen=True, slots=True)
class JournalEntry:
    time_s: float
    client: str
    summary: str


def _item(item: FailedItem) -> dict[str, Any]:
    record = item.record
    return {
        "text": item.text.decode("utf-8", "backslashreplace"),
        "reason": record.reason if record else None,
        "time": record.time_s if record else None,
        "attempts": record.attempts if record else None,
    }


class FailedLists:
    """The failed lists of the config, read and changed on one FailedStore."""

    def __init__(self, store: FailedStore) -> None:
        self.store = store
        self.journal: deque[JournalEntry] = deque(maxlen=JOURNAL)
        self._lock = threading.Lock()

    def listing(self, config: Config) -> dict[str, Any]:
        found = self.store.find(config, [], MOST_LISTS)
        lists = []
        for fl in found.lists:
            items, length = self.store.items(fl, MOST_SHOWN)
            lists.append(
                {
                    "name": fl.name,
                    "kind": fl.kind,
                    "queue": fl.queue,
                    "set": fl.set,
                    "length": length,
                    "items": [_item(i) for i in items],
                }
            )
        return {
            "lists": lists,
            "truncated": found.truncated,
            "journal": [
                {"time": e.time_s, "client": e.client, "summary": e.summary}
                for e in reversed(self.journal)
            ],
        }

    def act(self, config: Config, asked: FailedAction, client: str) -> dict[str, Any]:
        """Do what was asked; ActionError when the request is incomplete or unconfirmed.
        StoreError (from resc.ops) when Redis fails midway: what was done stays done."""
        accept = _selector(asked)
        needs_confirm = asked.action == "delete" or asked.select != "one"
        if needs_confirm and not asked.confirm:
            raise ActionError(f"{asked.action} of {asked.select} needs confirm: true")
        lists = self.store.find(config, [], MOST_LISTS).lists
        if asked.list is not None:
            lists = [fl for fl in lists if fl.name == asked.list]
            if not lists:
                raise ActionError(f"no failed list {asked.list!r}")
        if asked.action == "requeue":
            unknown = [fl.name for fl in lists if fl.set_unknown]
            if unknown:
                raise ActionError(
                    f"the dedup set of {unknown[0]} cannot be named from its queue's name: "
                    "not requeued, as that would leave its tasks out of their set"
                )
        with self._lock:
            return self._act(lists, asked, accept, client)

    def _act(
        self, lists: list[FailedList], asked: FailedAction, accept: Any, client: str
    ) -> dict[str, Any]:
        done: list[dict[str, Any]] = []
        for fl in lists:
            items, _ = self.store.items(fl, MOST_ACTED_ON)
            chosen = [i for i in items if accept(i)]
            if asked.select == "one":
                chosen = chosen[:1]
            outcome = Outcome()
            try:
                (self.store.requeue if asked.action == "requeue" else self.store.delete)(
                    chosen, outcome
                )
            finally:
                if chosen:
                    done.append(self._record(fl, asked, outcome, client))
            if asked.select == "one" and chosen:
                break
        if asked.select == "one" and not done:
            raise ActionError("that copy is no longer in the failed list")
        return {"lists": done}

    def _record(
        self, fl: FailedList, asked: FailedAction, outcome: Outcome, client: str
    ) -> dict[str, Any]:
        verb = "requeued" if asked.action == "requeue" else "deleted"
        selected = {
            "one": f"one copy of {(asked.text or '')[:SHOWN_CHARS]!r}",
            "all": "every copy",
            "filter": "the copies matching "
            + ", ".join(
                f"{k} {v!r}" for k, v in (("text", asked.match), ("reason", asked.reason)) if v
            ),
        }[asked.select]
        summary = f"{fl.name}: {outcome.done} {verb} ({selected})"
        if outcome.already_queued:
            summary += f", {outcome.already_queued} already in {fl.set}"
        if outcome.gone:
            summary += f", {outcome.gone} gone meanwhile"
        log.info(
            "dashboard action",
            action=asked.action,
            failed_list=fl.name,
            selected=selected,
            done=outcome.done,
            already_queued=outcome.already_queued,
            gone=outcome.gone,
            client=client,
        )
        self.journal.append(JournalEntry(time.time(), client, summary))
        return {
            "name": fl.name,
            verb: outcome.done,
            "already_queued": outcome.already_queued,
            "gone": outcome.gone,
        }


def _selector(asked: FailedAction) -> Any:
    if asked.select == "one":
        if asked.text is None:
            raise ActionError("select one needs the copy's text")
        wanted = asked.text.encode()
        return lambda item: item.text == wanted
    if asked.select == "all":
        return lambda item: True
    if not asked.match and not asked.reason:
        raise ActionError("select filter needs match or reason (a regex)")
    text_regex = _regex("match", asked.match)
    reason_regex = _regex("reason", asked.reason)

    def accept(item: FailedItem) -> bool:
        if text_regex is not None and text_regex.search(item.text) is None:
            return False
        if reason_regex is not None:
            reason = item.record.reason if item.record else ""
            return reason_regex.search(reason.encode()) is not None
        return True

    return accept


def _regex(name: str, source: str | None) -> Regex | None:
    if not source:
        return None
    try:
        return compile_regex(source)
    except ValueError as exc:
        raise ActionError(f"{name}: {exc}") from None
