"""The config: pydantic models of every field, loading, and checks with located errors.

Everything is validated before resc touches Redis: field types and unknown fields
(pydantic), regexes and patterns (compiled here, once), and the rules that tie fields
together (variables a pattern may use, queues watchers may share).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from resc.config_file import Loc, SourceFile, read_source
from resc.errors import ConfigError
from resc.keys import default_failed_queue, default_taken_queue
from resc.patterns import Pattern, parse_pattern
from resc.regex import Regex, compile_regex

INPUT_TASK = "input_task"
DEFAULT_RULE_NAME = "<anonymous rule>"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _to_pattern(value: Any) -> Pattern:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {_json_type(value)}")
    return parse_pattern(value)


def _to_regex(value: Any) -> Regex:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {_json_type(value)}")
    return compile_regex(value)


def _json_type(value: Any) -> str:
    names = {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        list: "an array",
        dict: "an object",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


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
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class RedisConfig(_Model):
    url: str = Field(description="redis://, rediss:// or unix:// URL, with password and db")

    @field_validator("url")
    @classmethod
    def _usable_url(cls, url: str) -> str:
        if not url.startswith(REDIS_SCHEMES):
            raise ValueError("must start with redis://, rediss:// or unix://")
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
        except ValueError:
            raise ValueError("the port must be a number from 0 to 65535") from None
        db = parts.path.strip("/") if parts.scheme != "unix" else ""
        query_db = dict(parse_qsl(parts.query)).get("db", "0")
        if not (db or "0").isdigit() or not query_db.isdigit():
            raise ValueError("the database must be a number: redis://host:6379/0")
        return url


class Fetch(_Model):
    url: PatternField
    returns: Annotated[str, Field(pattern=r"^[\w.]+$")] = Field(
        description="namespace of the fetched fields: ${returns.field}"
    )
    timeout: float = Field(10.0, gt=0, description="seconds to wait to connect, and for each read")


class Make(_Model):
    task: PatternField = Field(default_factory=lambda: parse_pattern("${input_task}"))
    queue: PatternField
    set: PatternField | None = None


class Rule(_Model):
    name: str = DEFAULT_RULE_NAME
    on: RegexField
    fetch: list[Fetch] = []
    make: Annotated[
        list[Make],
        BeforeValidator(_one_or_many, json_schema_input_type=Make | list[Make]),
        Field(min_length=1, validation_alias=AliasChoices("make", "todo")),
    ]


class Watcher(_Model):
    input_queue: str = Field(min_length=1)
    taken_queue: str = Field("", description='default: input_queue + "/taken"')
    failed_queue: str = Field("", description='default: input_queue + "/failed"')
    batch: int = Field(100, ge=1, le=10_000, description="most events taken at once")
    rules: list[Rule]

    @model_validator(mode="before")
    @classmethod
    def _default_queues(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("input_queue"), str):
            data = dict(data)
            data.setdefault("taken_queue", default_taken_queue(data["input_queue"]))
            data.setdefault("failed_queue", default_failed_queue(data["input_queue"]))
        return data


class Config(_Model):
    redis: RedisConfig
    listener_channel: str | None = None
    watchers: list[Watcher] = Field(min_length=1)


# --- checks that tie fields together ------------------------------------------------

Problem = tuple[Loc, str]


def _check_rule(rule: Rule, loc: Loc) -> list[Problem]:
    problems: list[Problem] = []
    if INPUT_TASK in rule.on.group_names:
        problems.append(
            (
                (*loc, "on"),
                f"a group may not be named {INPUT_TASK}: that variable is the whole event",
            )
        )
    own = {INPUT_TASK, *rule.on.group_names}
    namespaces = [f.returns for f in rule.fetch]
    for i, ns in enumerate(namespaces):
        if ns in namespaces[:i]:
            problems.append(((*loc, "fetch", i, "returns"), f"namespace {ns!r} used twice"))

    def unknown(pattern: Pattern, where: Loc, allowed_ns: list[str]) -> None:
        for name in sorted(pattern.names):
            if name in own:
                continue
            ns = next((n for n in allowed_ns if name.startswith(n + ".")), None)
            if ns is not None:
                continue
            known = [INPUT_TASK, *rule.on.group_names] + [f"{n}.*" for n in allowed_ns]
            problems.append(
                (where, f"${{{name}}} is not a variable of this rule; it has: {', '.join(known)}")
            )

    for i, fetch in enumerate(rule.fetch):
        unknown(fetch.url, (*loc, "fetch", i, "url"), [])
    for i, make in enumerate(rule.make):
        for field in ("task", "queue", "set"):
            pattern = getattr(make, field)
            if pattern is None:
                continue
            where = (*loc, "make", i, field)
            unknown(pattern, where, namespaces)
            if len(namespaces) > 1:
                used = {
                    ns for ns in namespaces for name in pattern.names if name.startswith(ns + ".")
                }
                if used:
                    problems.append(
                        (
                            where,
                            (
                                f"uses fields of fetch {', '.join(sorted(used))}, but with several "
                                f"fetches every make runs once per object of each fetch, so these "
                                f"fields would have no value for the others"
                            ),
                        )
                    )
    return problems


def _check_queues(config: Config) -> list[Problem]:
    problems: list[Problem] = []
    owner: dict[str, Loc] = {}
    for w, watcher in enumerate(config.watchers):
        for field in ("input_queue", "taken_queue", "failed_queue"):
            name = getattr(watcher, field)
            loc: Loc = ("watchers", w, field)
            if name in owner:
                other = owner[name]
                problems.append(
                    (
                        loc,
                        f"{name!r} is already {_path(other)}: each watcher "
                        f"needs its own input, taken and failed queues",
                    )
                )
            else:
                owner[name] = loc
    return problems


def _check(config: Config) -> list[Problem]:
    problems = _check_queues(config)
    for w, watcher in enumerate(config.watchers):
        for r, rule in enumerate(watcher.rules):
            problems += _check_rule(rule, ("watchers", w, "rules", r))
    return problems


# --- loading and error messages -----------------------------------------------------

_PYDANTIC_MESSAGES = {"missing": "required field is missing", "extra_forbidden": "unknown field"}


def _path(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _file_loc(source: SourceFile, loc: Loc) -> Loc:
    """The loc as the file spells it: alias names, and no [0] for a single `make` object."""
    out: list[str | int] = []
    for part in loc:
        if (
            part == "make"
            and "make" not in (source.value_at(tuple(out)) or {})
            and "todo" in (source.value_at(tuple(out)) or {})
        ):
            part = "todo"
        if isinstance(part, int) and isinstance(source.value_at(tuple(out)), dict):
            continue
        out.append(part)
    return tuple(out)


def _located(source: SourceFile, loc: Loc, message: str) -> str:
    loc = _file_loc(source, loc)
    line = source.line_of(loc)
    where = f"{source.path}:{line}" if line else str(source.path)
    return f"{where}: {_path(loc)}: {message}" if loc else f"{where}: {message}"


def _pydantic_message(error: Any) -> str:
    if error["type"] in _PYDANTIC_MESSAGES:
        return _PYDANTIC_MESSAGES[error["type"]]
    message: str = error["msg"]
    return re.sub(r"^(Value|Assertion) error, ", "", message)


def config_from_source(source: SourceFile) -> Config:
    if not isinstance(source.data, dict):
        raise ConfigError([f"{source.path}: the config must be an object"])
    try:
        config = Config.model_validate(source.data)
    except ValidationError as exc:
        raise ConfigError(
            [_located(source, tuple(e["loc"]), _pydantic_message(e)) for e in exc.errors()]
        ) from None
    problems = _check(config)
    if problems:
        raise ConfigError([_located(source, loc, message) for loc, message in problems])
    return config


def load_config(path: str | Path) -> Config:
    """Read, parse and check a config file; ConfigError lists every fault with its line."""
    return config_from_source(read_source(Path(path)))
