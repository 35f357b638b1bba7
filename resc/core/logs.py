"""Logging: structlog on top of stdlib logging, configured from the environment.

RESC_LOG (falling back to RUST_LOG) takes env_logger's syntax: a default level and
per-module levels, `warn,resc.fetch=debug` (`resc::fetch` works too). RESC_LOG_FORMAT=json
writes one JSON object per line; otherwise lines look like the original's:
`2026-11-22T23:48:59.123 [INFO] - message key=value`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

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


def parse_filter(spec: str) -> tuple[int, dict[str, int]]:
    """env_logger syntax -> (default level, {logger name: level}).

    Unknown words are ignored, as env_logger does; a module named without a level gets
    every message (`resc.fetch` alone means trace for it).
    """
    default = DEFAULT_LEVEL
    modules: dict[str, int] = {}
    spec = spec.split("/", 1)[0]  # env_logger's `/regex` message filter: not supported
    for directive in filter(None, (d.strip() for d in spec.split(","))):
        name, _, level = directive.partition("=")
        name = name.strip().replace("::", ".")
        if not level:
            if name.lower() in _LEVELS:
                default = _LEVELS[name.lower()]
            else:
                modules[name] = TRACE
        elif level.strip().lower() in _LEVELS:
            modules[name] = _LEVELS[level.strip().lower()]
    return default, modules


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
    event_dict.pop("logger", None)
    exc = event_dict.pop("exception", None)
    fields = " ".join(f"{k}={_plain(v)}" for k, v in event_dict.items())
    line = f"{stamp}.{millis:03d} [{level}] - {message}" + (f" {fields}" if fields else "")
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
    spec = environ.get("RESC_LOG") or environ.get("RUST_LOG") or ""
    default, modules = parse_filter(spec)
    as_json = environ.get("RESC_LOG_FORMAT", "").strip().lower() == "json"

    renderer: list[Any] = (
        [_jsonable, structlog.processors.JSONRenderer()] if as_json else [_render_text]
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name],
        processors=[
            _created,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
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
    # Libraries speak only when something is wrong, unless asked for by name.
    for noisy in ("httpx", "httpcore"):
        if noisy not in modules:
            logging.getLogger(noisy).setLevel(max(default, logging.WARNING))


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
