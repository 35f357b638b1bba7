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


class Case(_Model):
    """One event and what the config must make of it."""

    name: str | None = Field(None, description="shown in the report; default: the event")
    queue: str | None = Field(
        None,
        description="input queue of the watcher that takes the event; "
        "may be left out when the config has one watcher",
    )
    event: str
    fetch: dict[str, Any] = Field(
        {},
        description="stubbed web services: URL (as the rule builds it) -> JSON answer; "
        "a URL not listed fails the case, so tests never use the network",
    )
    expect: (
        Annotated[
            list[ExpectedTask],
            BeforeValidator(_one_or_many, json_schema_input_type=ExpectedTask | list[ExpectedTask]),
        ]
        | None
    ) = Field(None, description="every task the event makes, in any order; [] for none")
    expect_failure: str | None = Field(
        None, description="the event goes to the failed queue, with a reason containing this"
    )

    @field_validator("fetch")
    @classmethod
    def _absolute_urls(cls, fetch: dict[str, Any]) -> dict[str, Any]:
        for url in fetch:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{quoted(url)} is not an http:// or https:// URL")
        return fetch

    @model_validator(mode="after")
    def _one_expectation(self) -> Case:
        if (self.expect is None) == (self.expect_failure is None):
            raise ValueError(
                "a case needs either expect (the tasks, [] for none) or expect_failure "
                "(part of the failure reason)"
            )
        return self


class CaseFile(_Model):
    """A test file: `{ tests: [ ... ] }`, the same list as a config's `tests:`."""

    tests: list[Case] = Field(min_length=1)
