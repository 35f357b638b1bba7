"""Loading a config: reading the file, validating it against the models of config.py,
the checks that tie fields together, and error messages located at file, line and field.

Everything is checked before resc touches Redis.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from resc.config.models import (
    ENV_PREFIX,
    INPUT_TASK,
    SPELLED_TWICE,
    SPELLINGS,
    Config,
    RedisConfig,
    Rule,
    json_type,
)
from resc.config.patterns import Pattern
from resc.config.source import Loc, SourceFile, dotted, read_source
from resc.config.text import quoted, shown
from resc.core.errors import ConfigError

# Overrides (or gives) redis.url: see _with_redis_url_from.
REDIS_URL_VARIABLE = "RESC_REDIS_URL"
_ENV_NAME = re.compile(re.escape(ENV_PREFIX) + r"\w+")
_HTTP_SCHEMES = ("http://", "https://")

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
            problems.append(((*loc, "fetch", i, "returns"), f"namespace {quoted(ns)} used twice"))

    def unknown(pattern: Pattern, where: Loc, allowed_ns: list[str], env: bool = False) -> None:
        for name in sorted(pattern.names):
            if name in own or (env and _ENV_NAME.fullmatch(name)):
                continue
            ns = next((n for n in allowed_ns if name.startswith(n + ".")), None)
            if ns is not None:
                continue
            known = [INPUT_TASK, *rule.on.group_names] + [f"{n}.*" for n in allowed_ns]
            known += [f"{ENV_PREFIX}NAME"] if env else []
            problems.append(
                (
                    where,
                    f"{shown(f'${{{name}}}')} is not a variable of this rule; it has: "
                    f"{shown(', '.join(known))}",
                )
            )

    for i, fetch in enumerate(rule.fetch):
        at: Loc = (*loc, "fetch", i)
        if not _http_url(fetch.url):
            problems.append(
                (
                    (*at, "url"),
                    f"{quoted(fetch.url.source)} does not start with http:// or https:// (or "
                    f"with ${{env.NAME}}, an environment variable holding such a base URL)",
                )
            )
        unknown(fetch.url, (*at, "url"), [], env=True)
        for header, value in fetch.headers.items():
            unknown(value, (*at, "headers", header), [], env=True)
        if fetch.body is not None:
            unknown(fetch.body, (*at, "body"), [], env=True)
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


def _http_url(url: Pattern) -> bool:
    """Whether `url` can give an http or https URL. A base URL may come from the
    environment; event values are percent-encoded, so they can never give the scheme."""
    if url.refs and not url.literals[0] and url.refs[0].startswith(ENV_PREFIX):
        return True
    return url.source.lower().startswith(_HTTP_SCHEMES)


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
                        f"{quoted(name)} is already {dotted(other)}: each watcher "
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
# The pydantic errors of a number of the wrong type (strict: a boolean or a string is no
# number), and what the value must be.
_EXPECTED = {"int_type": "a whole number", "float_type": "a number"}


def _file_loc(source: SourceFile, loc: Loc) -> Loc:
    """The loc as the file spells it: a rule's fields as written (`makers`, `todo`...),
    and no [0] for a single `make` object."""
    out: list[str | int] = []
    for part in loc:
        parent = source.value_at(tuple(out))
        if _is_rule_loc(out) and isinstance(parent, dict) and part in SPELLINGS:
            part = next((s for s in SPELLINGS[part] if s in parent), part)
        if isinstance(part, int) and isinstance(parent, dict):
            continue
        out.append(part)
    return tuple(out)


def _is_rule_loc(loc: list[str | int]) -> bool:
    return len(loc) == 4 and loc[0] == "watchers" and loc[2] == "rules"


def _located(source: SourceFile, loc: Loc, message: str) -> str:
    loc = _file_loc(source, loc)
    line = source.line_of(loc)
    where = f"{source.path}:{line}" if line else str(source.path)
    return f"{where}: {dotted(loc)}: {message}" if loc else f"{where}: {message}"


def _pydantic_problem(source: SourceFile, error: Any) -> str:
    loc = tuple(error["loc"])
    if error["type"] == SPELLED_TWICE:
        other = error["ctx"]["other"]
        return _located(
            source,
            (*loc, error["ctx"]["field"]),
            f"the same field as {other} (line {source.line_of((*loc, other))}), spelled "
            f"differently: write only one of them",
        )
    return _located(source, loc, _pydantic_message(error))


def _pydantic_message(error: Any) -> str:
    if error["type"] in _PYDANTIC_MESSAGES:
        return _PYDANTIC_MESSAGES[error["type"]]
    if error["type"] == "string_too_short" and error["ctx"]["min_length"] == 1:
        return "must not be empty"
    if error["type"] in _EXPECTED:
        value = error["input"]
        given = repr(value) if type(value) is float else json_type(value)
        return f"must be {_EXPECTED[error['type']]}, not {given}"
    message: str = error["msg"]
    return re.sub(r"^(Value|Assertion) error, ", "", message)


def located(source: SourceFile, loc: Loc, message: str) -> str:
    """A problem at the model path `loc` as `file:line: field.path: message`, the path
    spelled as the file spells it."""
    return _located(source, loc, message)


def field_path(source: SourceFile, loc: Loc) -> str:
    """The model path `loc` as the file spells it: `watchers[0].rules[1].todo.queue`."""
    return dotted(_file_loc(source, loc))


def validation_problems(source: SourceFile, exc: ValidationError) -> list[str]:
    """pydantic's errors for data read from `source`, one located message each."""
    return [_pydantic_problem(source, e) for e in exc.errors()]


def config_from_source(source: SourceFile, environ: Mapping[str, str] | None = None) -> Config:
    """The config read from `source`, with redis.url from RESC_REDIS_URL when `environ`
    (the process's environment by default) sets it."""
    if not isinstance(source.data, dict):
        raise ConfigError([f"{source.path}: the config must be an object"])
    data = _with_redis_url_from(os.environ if environ is None else environ, source.data)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        located = [
            f"{problem} (or set {REDIS_URL_VARIABLE})"
            if problem.endswith(": redis: required field is missing")
            else problem
            for problem in validation_problems(source, exc)
        ]
        raise ConfigError(located) from None
    problems = _check(config)
    if problems:
        raise ConfigError([_located(source, loc, message) for loc, message in problems])
    return config


def _with_redis_url_from(environ: Mapping[str, str], data: dict[str, Any]) -> dict[str, Any]:
    """The config's data with redis.url replaced by RESC_REDIS_URL when that is set (the
    URL of a container or a Kubernetes Secret, kept out of the config file); the file
    may then leave `redis` out. The variable is checked as the field is, and its value
    never shown: it may hold a password."""
    url = environ.get(REDIS_URL_VARIABLE, "")
    if not url:
        return data
    try:
        RedisConfig(url=url)
    except ValidationError as exc:
        reason = _pydantic_message(exc.errors()[0])
        raise ConfigError(
            [f"{REDIS_URL_VARIABLE} (the environment variable that overrides redis.url): {reason}"]
        ) from None
    redis = data.get("redis")
    return {**data, "redis": {**redis, "url": url} if isinstance(redis, dict) else {"url": url}}


def load_config(path: str | Path) -> Config:
    """Read, parse and check a config file; ConfigError lists every fault with its line."""
    return config_from_source(read_source(Path(path)))
