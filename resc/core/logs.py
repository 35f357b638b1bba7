"""Logging: structlog on top of stdlib logging, configured from the environment.

RESC_LOG (falling back to RUST_LOG) takes env_logger's syntax: a default level and
per-module levels, `warn,resc.fetch=debug` (`resc::fetch` works too); the libraries resc
uses speak from warnings up unless named (LIBRARIES). RESC_LOG_FORMAT=json
writes one JSON object per line; otherwise lines look like the original's:
`2026-11-22T23:48:59.123 [INFO] - message key=value` (with the logger's name before the
dash for loggers outside resc). A value naming an event or task is shown as an excerpt
when long (see `excerpt`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import Any, NamedTuple, TextIO

import structlog

TRACE = 5
_LEVELS = {
    "off": logging.CRITICAL + 10,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE,
}
_LEVEL_NAMES = {TRACE: "TRACE", logging.WARNING: "WARN"}
DEFAULT_LEVEL = logging.WARNING
FORMATS = ("text", "json")
# Libraries under resc whose debug and info messages are noise to a user of resc
# (redis-py's at every connection): shown only when named, as in `redis=debug`.
LIBRARIES = ("redis", "httpx", "httpcore", "uvicorn")

# Events, tasks and the values taken from them (bytes, or the fields named below) are
# logged as an excerpt beyond EXCERPT_CHARS: a 10 MB event must not make a 10 MB line.
# Other text (reasons, URLs) is cut the same way beyond _TEXT_CHARS.
EXCERPT_CHARS = 200
_TEXT_CHARS = 2000
_EVENT_FIELDS = frozenset({"input_task", "task"})


class Filter(NamedTuple):
    """A parsed RESC_LOG: the default level, levels by logger, and the words that are
    not levels (ignored)."""

    default: int
    modules: dict[str, int]
    unknown: list[str]


def parse_filter(spec: str) -> Filter:
    """env_logger syntax -> Filter.

    A name without a level gets every message when it names a module (`resc`, or dotted:
    `resc.fetch` alone means trace for it); any other word alone, or after `=`, that is
    not a level is unknown, and ignored.
    """
    default = DEFAULT_LEVEL
    modules: dict[str, int] = {}
    unknown: list[str] = []
    spec = spec.split("/", 1)[0]  # env_logger's `/regex` message filter: not supported
    for directive in filter(None, (d.strip() for d in spec.split(","))):
        name, _, level = directive.partition("=")
        name = name.strip().replace("::", ".")
        level = level.strip()
        if not level:
            if name.lower() in _LEVELS:
                default = _LEVELS[name.lower()]
            elif name == "resc" or "." in name:
                modules[name] = TRACE
            else:
                unknown.append(name)
        elif level.lower() in _LEVELS:
            modules[name] = _LEVELS[level.lower()]
        else:
            unknown.append(level)
    return Filter(default, modules, unknown)


def excerpt(value: bytes | str, chars: int = EXCERPT_CHARS) -> str:
    """`value` when it has at most `chars` characters; else its first `chars`, its size
    in bytes and a short digest (the first 12 hex digits of its SHA-256), enough to tell
    events apart and find one: `acq/aaaa... (1048576 bytes, sha256 aacf08595394)`."""
    data = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
    if len(data) <= chars:
        return _text(value)
    # Each byte makes at most 4 characters of text; no need to decode more.
    head = _text(data[: chars * 4])
    if len(head) <= chars and len(data) <= chars * 4:
        return head
    digest = hashlib.sha256(data).hexdigest()[:12]
    return f"{head[:chars]}... ({len(data)} bytes, sha256 {digest})"


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def _bounded(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event_dict.items():
        if key == "event":  # structlog's name for the message
            continue
        if isinstance(value, bytes) or (isinstance(value, str) and key in _EVENT_FIELDS):
            if len(value) > EXCERPT_CHARS:
                event_dict[key] = excerpt(value)
        elif isinstance(value, str) and len(value) > _TEXT_CHARS:
            event_dict[key] = excerpt(value, _TEXT_CHARS)
    return event_dict


def _plain(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    if isinstance(value, str):
        if value and not any(c in value for c in ' "=\n\\') and value.isprintable():
            return value
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _render_text(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> str:
    created = event_dict.pop("_created", time.time())
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(created))
    millis = int(created * 1000) % 1000
    level = event_dict.pop("level", "info").upper()
    level = "WARN" if level == "WARNING" else level
    message = event_dict.pop("event", "")
    name = event_dict.pop("logger", None) or ""
    # Other libraries' lines say whose they are; resc's look like the original's.
    source = "" if name == "resc" or name.startswith("resc.") or not name else f" {name}"
    exc = event_dict.pop("exception", None)
    fields = " ".join(f"{k}={_plain(v)}" for k, v in event_dict.items())
    line = f"{stamp}.{millis:03d} [{level}]{source} - {message}" + (f" {fields}" if fields else "")
    return line + (f"\n{exc}" if exc else "")


def _jsonable(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> Mapping[str, Any]:
    created = event_dict.pop("_created", time.time())
    out: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        + f".{int(created * 1000) % 1000:03d}Z",
        "level": event_dict.pop("level", "info"),
        "logger": event_dict.pop("logger", ""),
        "message": event_dict.pop("event", ""),
    }
    for key, value in event_dict.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8", "backslashreplace")
        out[key] = value if isinstance(value, (int, float, bool, type(None))) else str(value)
    return out


def _created(logger: Any, name: str, event_dict: MutableMapping[str, Any]) -> Any:
    record = event_dict.get("_record")
    event_dict["_created"] = record.created if record is not None else time.time()
    return event_dict


def configure(environ: Mapping[str, str] | None = None, stream: TextIO | None = None) -> None:
    """Set up logging from RESC_LOG / RUST_LOG and RESC_LOG_FORMAT."""
    environ = os.environ if environ is None else environ
    variable = "RESC_LOG" if environ.get("RESC_LOG") else "RUST_LOG"
    default, modules, unknown = parse_filter(environ.get(variable) or "")
    log_format = environ.get("RESC_LOG_FORMAT", "").strip().lower() or "text"
    as_json = log_format == "json"

    renderer: list[Any] = (
        [_jsonable, structlog.processors.JSONRenderer()] if as_json else [_render_text]
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name],
        processors=[
            _created,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _bounded,
            structlog.processors.format_exc_info,
            *renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(default)
    logging.addLevelName(TRACE, "TRACE")
    for name in list(logging.root.manager.loggerDict):
        logging.getLogger(name).setLevel(logging.NOTSET)
    for name, level in modules.items():
        logging.getLogger(name).setLevel(level)
    for library in LIBRARIES:
        if not any(name == library or name.startswith(f"{library}.") for name in modules):
            logging.getLogger(library).setLevel(max(default, logging.WARNING))
    warn = get_logger("resc.logs").warning
    level_name = next(name for name, level in _LEVELS.items() if level == default)
    for word in unknown:
        warn(
            f"{variable}: {word!r} is not a level (off, error, warn, info, debug, trace): "
            f"ignored; the default level is {level_name}"
        )
    if log_format not in FORMATS:
        warn(f"RESC_LOG_FORMAT: {log_format!r} is not a format (text, json): using text")


def _route_structlog_through_stdlib() -> None:
    """structlog hands every entry to stdlib logging, which filters and writes it; done at
    import, so loggers work (and know their level) before configure() is called."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


_route_structlog_through_stdlib()


def get_logger(name: str) -> Any:
    """A structlog logger for a module of resc (`resc.watcher`, `resc.fetch`, ...)."""
    return structlog.stdlib.get_logger(name)
