"""The shape of a config unit test case, run by `resc test`: in a test file, or under
`tests:` in the config itself (where the daemon ignores it).

resc.config.models imports these models for its `tests:` field; they import nothing of resc
but resc.config.text, so that resc.ops.case_runner, which runs cases through the rules, makes
no import cycle.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from resc.config.text import quoted


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, dict) else value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExpectedTask(_Model):
    """One result a case expects: the task pushed into `queue`, deduplicated by `set`."""

    task: str
    queue: str
    set: str | None = Field(None, description="the dedup set; left out: no set")
    deduplicated: bool = Field(
        False,
        description="made but not pushed: already in its set (put there by an earlier "
        "event of the case, or earlier by the same event)",
    )

    @model_validator(mode="after")
    def _deduplicated_by_a_set(self) -> ExpectedTask:
        if self.deduplicated and self.set is None:
            raise ValueError("deduplicated: a task without set is never deduplicated")
        return self


Tasks = Annotated[
    list[ExpectedTask],
    BeforeValidator(_one_or_many, json_schema_input_type=ExpectedTask | list[ExpectedTask]),
]
# A listener message: the text of a text-format message, or fields that a JSON message
# must have (with these values; the others, such as time, are not compared).
Message = str | dict[str, Any]

_EXPECT = Field(
    None,
    description="every task the event makes, in any order, each pushed or deduplicated; "
    "[] for none",
)
_EXPECT_FAILURE = Field(
    None, description="the event goes to the failed queue, with a reason containing this"
)
_EXPECT_MESSAGES = Field(
    None,
    description="every message the event's commit publishes on listener_channel, in order: "
    "a text message as a string, a JSON message as the fields it must have",
)
_ONE_EXPECTATION = (
    "a case needs either expect (the tasks, [] for none) or expect_failure (part of the "
    "failure reason)"
)


class Step(_Model):
    """One event of a case with several, and what it must make."""

    event: str
    expect: Tasks | None = _EXPECT
    expect_failure: str | None = _EXPECT_FAILURE
    expect_messages: list[Message] | None = _EXPECT_MESSAGES

    @model_validator(mode="after")
    def _one_expectation(self) -> Step:
        if (self.expect is None) == (self.expect_failure is None):
            raise ValueError(_ONE_EXPECTATION)
        return self


class Case(_Model):
    """One event, or several in turn, and what the config must make of them."""

    name: str | None = Field(None, description="shown in the report; default: the event")
    queue: str | None = Field(
        None,
        description="input queue of the watcher that takes the event; "
        "may be left out when the config has one watcher",
    )
    event: str | None = Field(None, description="the event; or events: for several")
    events: list[Step] | None = Field(
        None,
        min_length=1,
        description="several events, committed one after the other to the same in-memory "
        "Redis, each with its own expectations",
    )
    fetch: dict[str, Any] = Field(
        {},
        description="stubbed web services: URL (as the rule builds it) -> JSON answer; "
        "a URL not listed fails the case, so tests never use the network",
    )
    expect: Tasks | None = _EXPECT
    expect_failure: str | None = _EXPECT_FAILURE
    expect_messages: list[Message] | None = _EXPECT_MESSAGES

    @field_validator("fetch")
    @classmethod
    def _absolute_urls(cls, fetch: dict[str, Any]) -> dict[str, Any]:
        for url in fetch:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{quoted(url)} is not an http:// or https:// URL")
        return fetch

    @model_validator(mode="after")
    def _one_expectation(self) -> Case:
        if self.events is not None:
            if self.event is not None:
                raise ValueError("a case has either event or events, not both")
            if not (self.expect is None and self.expect_failure is None):
                raise ValueError("with events, each event has its own expect or expect_failure")
            if self.expect_messages is not None:
                raise ValueError("with events, each event has its own expect_messages")
            return self
        if self.event is None:
            raise ValueError("a case needs an event (or events: for several)")
        if (self.expect is None) == (self.expect_failure is None):
            raise ValueError(_ONE_EXPECTATION)
        return self

    @property
    def steps(self) -> list[Step]:
        """The case's events in turn, each with what it must make."""
        if self.events is not None:
            return self.events
        assert self.event is not None  # checked by _one_expectation
        return [
            Step(
                event=self.event,
                expect=self.expect,
                expect_failure=self.expect_failure,
                expect_messages=self.expect_messages,
            )
        ]


class CaseFile(_Model):
    """A test file: `{ tests: [ ... ] }`, the same list as a config's `tests:`."""

    tests: list[Case] = Field(min_length=1)
