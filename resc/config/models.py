"""The config: pydantic models of every field, with their defaults and the checks of
one field at a time (types, unknown fields, regexes and patterns compiled here, once).
The checks that tie fields together, and loading a file, are in config_load.py."""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from resc.config.cases import Case
from resc.config.durations import parse_duration_s, parse_time_s
from resc.config.patterns import Pattern, parse_pattern, reference_problem
from resc.config.redis_url import parse_redis_url
from resc.config.regex import Regex, compile_regex
from resc.config.text import quoted, shown
from resc.core.keys import default_failed_queue, default_taken_queue

INPUT_TASK = "input_task"
DEFAULT_RULE_NAME = "<anonymous rule>"
# redis.url for a private server started with the daemon (resc/private_redis.py).
EMBEDDED_REDIS = "embedded"


def _to_pattern(value: Any) -> Pattern:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {json_type(value)}")
    problem = reference_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return parse_pattern(value)


def _to_regex(value: Any) -> Regex:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {json_type(value)}")
    return compile_regex(value)


def json_type(value: Any) -> str:
    """The JSON name of a value's type, with its article: "a number", "an object"."""
    names = {
        bool: "a boolean",
        str: "a string",
        int: "a number",
        float: "a number",
        list: "an array",
        dict: "an object",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def _number_as_text(value: Any) -> Any:
    """A number where a pattern of one is expected (`delay: 30`): its text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    return value


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, dict) else value


PatternField = Annotated[
    Pattern,
    BeforeValidator(_to_pattern),
    PlainSerializer(str),
    WithJsonSchema({"type": "string", "description": "text with ${name} references"}),
]
RegexField = Annotated[
    Regex,
    BeforeValidator(_to_regex),
    PlainSerializer(lambda r: r.source),
    WithJsonSchema({"type": "string", "description": "regex (RE2 / Rust regex syntax)"}),
]


class _Model(BaseModel):
    # strict: no conversion between types, so `batch: true`, `retries: "3"` or
    # `grace_period: true` are errors (as for the JSON schema), not 1, 3 and 1.0. A number
    # still fills a float field: Hjson and JSON read 10 as an int.
    model_config = ConfigDict(
        extra="forbid", frozen=True, arbitrary_types_allowed=True, strict=True
    )


class RedisConfig(_Model):
    url: str = Field(
        description="redis://, rediss:// or unix:// URL, with password and db; "
        "redis+sentinel://[[user]:password@]host:port[,host:port...]/MASTER_NAME[/DB] for the "
        "master that sentinels name; "
        "redis+cluster://[[user]:password@]host:port[,host:port...] for a Redis Cluster (a "
        "redis:// URL of a cluster node is used as one too); or "
        '"embedded": a private server that `resc run` starts '
        '(pip install "resc[embedded]")'
    )
    wait_replicas: int = Field(
        default=0,
        ge=0,
        le=16,
        description="on a Redis Cluster: how many replicas of a master must acknowledge "
        "(WAIT, at most 1 s) the tasks that a commit pushed there for another slot's events "
        "before the commit forgets them; 0: none",
    )

    @field_validator("url")
    @classmethod
    def _usable_url(cls, url: str) -> str:
        if url != EMBEDDED_REDIS:
            parse_redis_url(url)
        return url


# `${env.NAME}` in a fetch's url, headers or body: the environment variable NAME, read
# when the request is made, so that tokens stay out of config files.
ENV_PREFIX = "env."
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an RFC 9110 token


class Breaker(_Model):
    """A fetch's circuit breaker (resc.fetch.breaker)."""

    failures: int = Field(
        default=5,
        ge=1,
        description="consecutive failed fetches (after retries) that open the circuit",
    )
    cooldown: float = Field(
        default=30.0, gt=0, description="seconds the circuit stays open before one trial request"
    )


class _FetchSettings(_Model):
    """The fields of a fetch that `fetch_defaults` may set for every fetch."""

    timeout: float = Field(
        default=10.0, gt=0, description="seconds to wait to connect, and for each read"
    )
    retries: int = Field(
        default=3,
        ge=0,
        description="attempts after the first one, on a connection error, a timeout, "
        "HTTP 429 or 5xx",
    )
    backoff: float = Field(
        default=0.5,
        ge=0,
        description="seconds: the wait before retry n is random between 0 and "
        "backoff * 2**(n-1), at most 30 s; a Retry-After header (at most 60 s) takes its place",
    )
    max_results: int = Field(
        default=10_000, ge=1, description="most objects an answer may hold; more fails the event"
    )
    max_response_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1,
        description="largest answer read, in bytes; larger fails the event",
    )
    breaker: Breaker = Breaker()


class FetchDefaults(_FetchSettings):
    """`fetch_defaults`: the values of every fetch that does not set them itself."""


class Fetch(_FetchSettings):
    """One web service call of a rule. Each Fetch carries its effective settings:
    `fetch_defaults` is applied when the config is loaded (Config._apply_fetch_defaults)."""

    url: PatternField = Field(
        description="event values are percent-encoded into it; ${env.NAME} values go in as they are"
    )
    returns: Annotated[str, Field(pattern=r"^[\w.]+$")] = Field(
        description="namespace of the fetched fields: ${returns.field}"
    )
    method: Literal["GET", "POST"] = "GET"
    headers: dict[str, PatternField] = Field(
        default={}, description="header name -> pattern; ${env.NAME} reads an environment variable"
    )
    body: PatternField | None = Field(
        default=None,
        description="POST only: JSON text; each ${name} is replaced by its value escaped as "
        "inside a JSON string, and the result must be valid JSON",
    )
    path: str | None = Field(
        default=None, description="where the objects are in the answer: data.children"
    )

    @functools.cached_property
    def env_names(self) -> tuple[str, ...]:
        """The `env.NAME` references of the URL, headers and body, sorted: read from the
        environment at each request."""
        patterns = [self.url, *self.headers.values()]
        patterns += [self.body] if self.body is not None else []
        return tuple(
            sorted({ref for p in patterns for ref in p.refs if ref.startswith(ENV_PREFIX)})
        )

    @field_validator("headers")
    @classmethod
    def _valid_headers(cls, headers: dict[str, Pattern]) -> dict[str, Pattern]:
        for name, value in headers.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{quoted(name)} is not an HTTP header name")
            if any(b"\r" in text or b"\n" in text for text in value.literals):
                raise ValueError(f"the value of {shown(name)} has a line break")
        return headers

    @field_validator("body")
    @classmethod
    def _json_body(cls, body: Pattern, info: ValidationInfo) -> Pattern:
        if info.data.get("method", "POST") != "POST":
            raise ValueError("a body needs method: POST")
        # A typo (a missing comma or quote) shows at start, not on every event. Each
        # ${name} becomes as many 1s, valid JSON inside quotes and without, and keeping
        # the positions in the error those of the body as written.
        sample = [body.literals[0].decode()]
        for ref, literal in zip(body.refs, body.literals[1:], strict=True):
            sample += ["1" * len(f"${{{ref}}}"), literal.decode()]
        try:
            json.loads("".join(sample))
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"is not JSON (each ${{name}} taken as a number): {exc}") from None
        return body

    @field_validator("path")
    @classmethod
    def _dotted_path(cls, path: str | None) -> str | None:
        if path is not None and not all(path.split(".")):
            raise ValueError("must be field names separated by dots, as in data.children")
        return path


def _to_duration_s(value: Any) -> float:
    """A duration: a number of seconds, or a text like "500ms", "90s", "12h", "7d"."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(
            f"must be a number of seconds or a text like '12h', not {json_type(value)}"
        )
    if isinstance(value, str):
        value = parse_duration_s(value)
    if not value > 0 or not math.isfinite(value):
        raise ValueError("must be more than 0 seconds")
    return float(value)


DurationField = Annotated[
    float,
    BeforeValidator(_to_duration_s),
    WithJsonSchema(
        {
            "type": ["number", "string"],
            "description": "seconds, or a text like 500ms, 90s, 30m, 12h, 7d",
        }
    ),
]


class Make(_Model):
    name: str | None = Field(
        default=None, description="shown in logs and in JSON listener messages; none by default"
    )
    task: PatternField = Field(default_factory=lambda: parse_pattern("${input_task}"))
    queue: PatternField
    set: PatternField | None = None
    set_ttl: DurationField | None = Field(
        default=None,
        description="members of the set older than this whose task is neither in the queue "
        "nor taken by a worker are removed (a worker that died before its ZREM); default: "
        "the watcher's set_ttl, else never",
    )
    queue_glob: str | None = Field(
        default=None,
        min_length=1,
        description="a SCAN glob listing the queues that a queue pattern with variables "
        "makes (trt/*/todo-queue), for resc status, resc failed, the metrics and set_ttl",
    )

    delay: Annotated[PatternField | None, BeforeValidator(_number_as_text)] = Field(
        default=None,
        description="push the task this long after the event (500ms, 30s, 2h, or seconds); "
        "a pattern, so ${name} can compute it",
    )
    at: Annotated[PatternField | None, BeforeValidator(_number_as_text)] = Field(
        default=None,
        description="push the task at this time: unix seconds or RFC 3339 "
        "(2026-12-01T08:00:00Z); a pattern such as ${ts}",
    )

    @model_validator(mode="after")
    def _delay_or_at(self) -> Make:
        if self.delay is not None and self.at is not None:
            raise ValueError("give delay or at, not both")
        return self

    # Without references the value is known now: check it now, not at every event.
    @field_validator("delay")
    @classmethod
    def _a_duration(cls, pattern: Pattern | None) -> Pattern | None:
        if pattern is not None and pattern.source and not pattern.refs:
            parse_duration_s(pattern.source)
        return pattern

    @field_validator("at")
    @classmethod
    def _a_time(cls, pattern: Pattern | None) -> Pattern | None:
        if pattern is not None and pattern.source and not pattern.refs:
            parse_time_s(pattern.source)
        return pattern

    @model_validator(mode="after")
    def _ttl_needs_a_set(self) -> Make:
        if self.set_ttl is not None and self.set is None:
            raise ValueError("set_ttl needs a set")
        # The expiry finds sets by name and must tell which queue holds their tasks.
        missing = self.queue.names - (self.set.names if self.set is not None else set())
        if self.set_ttl is not None and missing:
            raise ValueError(
                f"set_ttl needs a set whose name holds every variable of the queue's: the "
                f"set lacks {', '.join(sorted(missing))}"
            )
        return self

    @field_validator("task", "queue", "set", "delay", "at")
    @classmethod
    def _not_empty(cls, pattern: Pattern | None) -> Pattern | None:
        # Redis takes an empty list name, set name or element: a typo that would push
        # every task under one key no worker watches.
        if pattern is not None and not pattern.source:
            raise ValueError("must not be empty")
        return pattern


# The original's source names a rule's fields on_regex, fetchers and makers, with on,
# fetch and make as aliases, and its README once spells make as todo: configs use all of
# them. The first spelling of each is the field's name here.
SPELLINGS = {
    "on": ("on", "on_regex"),
    "fetch": ("fetch", "fetchers"),
    "make": ("make", "makers", "todo"),
}
# The pydantic error type of a rule that spells one field twice; its context names the
# later spelling (`field`) and the earlier one (`other`), so that the loader can locate it.
SPELLED_TWICE = "spelled_twice"


class Rule(_Model):
    name: str = DEFAULT_RULE_NAME
    on: RegexField = Field(validation_alias=AliasChoices(*SPELLINGS["on"]))
    fetch: list[Fetch] = Field([], validation_alias=AliasChoices(*SPELLINGS["fetch"]))
    make: Annotated[
        list[Make],
        BeforeValidator(_one_or_many, json_schema_input_type=Make | list[Make]),
        Field(min_length=1, validation_alias=AliasChoices(*SPELLINGS["make"])),
    ]

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, data: Any) -> Any:
        """Two spellings of one field would leave one of them silently unused."""
        if isinstance(data, Mapping):
            for spellings in SPELLINGS.values():
                written = [key for key in data if key in spellings]
                if len(written) > 1:
                    raise PydanticCustomError(
                        SPELLED_TWICE,
                        "{field} is another spelling of {other}: write only one of them",
                        {"field": written[1], "other": written[0]},
                    )
        return data


class Watcher(_Model):
    input_queue: str = Field(min_length=1)
    taken_queue: str = Field("", min_length=1, description='default: input_queue + "/taken"')
    failed_queue: str = Field("", min_length=1, description='default: input_queue + "/failed"')
    batch: int = Field(100, ge=1, le=10_000, description="most events taken at once")
    concurrency: int = Field(
        1, ge=1, le=1_000, description="events of a batch processed at once (for fetches)"
    )
    max_connections: int | None = Field(
        None,
        ge=1,
        le=1_000,
        description="most keep-alive connections of the watcher's fetches, to all web "
        "services together (default: concurrency); fetches beyond it wait for a free one",
    )
    max_attempts: int = Field(
        5,
        ge=1,
        description="times an event may be interrupted (resc killed, Redis lost) before "
        "it goes to the failed queue",
    )
    set_ttl: DurationField | None = Field(
        default=None, description="the set_ttl of the makes of this watcher that have a set"
    )
    rules: list[Rule]

    @model_validator(mode="before")
    @classmethod
    def _default_queues(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("input_queue"), str):
            data = dict(data)
            data.setdefault("taken_queue", default_taken_queue(data["input_queue"]))
            data.setdefault("failed_queue", default_failed_queue(data["input_queue"]))
        return data


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT (or :PORT for every interface) -> (host, port); ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{quoted(text)} is not HOST:PORT, for example 127.0.0.1:9090")
    return host.strip("[]") or "0.0.0.0", int(port)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class HttpTokens(_Model):
    """The names of the environment variables holding the API's bearer tokens: the
    tokens themselves stay out of config files. A role without a token is open; the
    admin token is accepted for every role."""

    produce: str | None = Field(None, description="for POST /v1/queues/{queue}/events")
    consume: str | None = Field(None, description="for the promises of todo queues")
    admin: str | None = Field(None, description="accepted wherever a token is asked for")

    @field_validator("produce", "consume", "admin")
    @classmethod
    def _env_name(cls, name: str | None) -> str | None:
        if name is not None and not _ENV_NAME.fullmatch(name):
            raise ValueError(f"{quoted(name)} is not an environment variable name")
        return name


class HttpConfig(_Model):
    listen: str = Field(
        description="HOST:PORT of the HTTP server: /metrics, /livez, /readyz and the API"
    )
    produce: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None,
        description="queues that POST /v1/queues/{queue}/events may push into; "
        "default: every watcher's input queue",
    )
    consume: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None,
        description="todo queues whose tasks the API hands out as promises; default: every "
        "make queue without ${name} references",
    )
    done_queue: str | None = Field(
        "global/events",
        min_length=1,
        description="where a task whose promise is done is pushed, as an event; null: nowhere",
    )
    zrem: Literal["before", "after"] = Field(
        "before",
        description="when a task leaves its queue's dedup set: at the claim (before) or "
        "when done or failed (after)",
    )
    max_body_bytes: int = Field(
        1024 * 1024, ge=1, description="largest request body, in bytes; larger is refused (413)"
    )
    tokens: HttpTokens = HttpTokens(produce=None, consume=None, admin=None)
    api_process: bool = Field(
        True,
        description="resc run: answer the API from a process of its own, so that its load "
        "never slows the watchers (the daemon's process keeps /metrics, /livez, /readyz "
        "and the dashboard on the same address); false: in the daemon's process",
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, listen: str) -> str:
        parse_listen(listen)
        return listen


class Config(_Model):
    redis: RedisConfig
    listener_channel: str | None = None
    listener_format: Literal["text", "json"] = Field(
        "text",
        description="text: the original's messages; json: one JSON object per message",
    )
    http: HttpConfig | None = None
    grace_period: float = Field(
        8.0,
        ge=0,
        description="seconds to finish the events in hand when stopping; fetches still "
        "running then are abandoned (8: inside docker stop's 10 s)",
    )
    heartbeat_ttl: float = Field(
        15.0,
        ge=3,
        le=3600,
        description="seconds a watcher's heartbeat lives unless refreshed (every third of "
        "it); after that, another resc on the same config puts its events back",
    )
    watchers: list[Watcher] = Field(min_length=1)
    tests: list[Case] = Field(
        [], description="unit tests run by `resc test`; the daemon ignores them"
    )
    fetch_defaults: FetchDefaults = Field(
        default=FetchDefaults(), description="values for every fetch that does not set them"
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_fetch_defaults(cls, data: Any) -> Any:
        """Give every fetch the `fetch_defaults` it does not set itself (a `breaker` field
        by field), so that each Fetch carries its effective values. Invalid defaults are
        left alone here: validation reports them once, at fetch_defaults, not at every
        fetch."""
        if not isinstance(data, Mapping):
            return data
        defaults = data.get("fetch_defaults")
        if not isinstance(defaults, Mapping) or "watchers" not in data:
            return data
        try:
            FetchDefaults.model_validate(defaults)
        except ValidationError:
            return data
        return {**data, "watchers": _with_fetch_defaults(data["watchers"], defaults)}


def _with_fetch_defaults(watchers: Any, defaults: Mapping[str, Any]) -> Any:
    """The raw `watchers` value with `defaults` filled into every fetch; parts of the wrong
    shape are left as they are, for validation to report."""

    def fetch(value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        merged = {**defaults, **value}
        if isinstance(defaults.get("breaker"), Mapping) and isinstance(
            value.get("breaker"), Mapping
        ):
            merged["breaker"] = {**defaults["breaker"], **value["breaker"]}
        return merged

    def rule(value: Any) -> Any:
        if not isinstance(value, Mapping) or not isinstance(value.get("fetch"), list):
            return value
        return {**value, "fetch": [fetch(f) for f in value["fetch"]]}

    def watcher(value: Any) -> Any:
        if not isinstance(value, Mapping) or not isinstance(value.get("rules"), list):
            return value
        return {**value, "rules": [rule(r) for r in value["rules"]]}

    return [watcher(w) for w in watchers] if isinstance(watchers, list) else watchers
