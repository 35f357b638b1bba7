"""Logging: env_logger-style filters, and the text and JSON line formats."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from resc.core.logs import TRACE, configure, excerpt, get_logger, parse_filter

WARN, INFO, DEBUG = logging.WARNING, logging.INFO, logging.DEBUG
LogTo = Callable[[dict[str, str]], io.StringIO]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", (WARN, {}, [])),
        ("info", (INFO, {}, [])),
        ("DEBUG", (DEBUG, {}, [])),
        ("warn,resc.fetch=debug", (WARN, {"resc.fetch": DEBUG}, [])),
        ("resc::fetch=debug", (WARN, {"resc.fetch": DEBUG}, [])),
        ("resc.fetch", (WARN, {"resc.fetch": TRACE}, [])),
        (" info , resc = trace ", (INFO, {"resc": TRACE}, [])),
        ("resc=loud,info", (INFO, {}, ["loud"])),  # an unknown level: the directive is ignored
        ("inof", (WARN, {}, ["inof"])),  # a bare word: a module only when resc or dotted
        ("resc", (WARN, {"resc": TRACE}, [])),
        ("debug/some regex", (DEBUG, {}, [])),
    ],
)
def test_parse_filter(spec: str, expected: tuple[Any, ...]) -> None:
    assert parse_filter(spec) == expected


@pytest.fixture
def log_to() -> Iterator[LogTo]:
    """Configures logging into a buffer; puts the previous setup back afterwards."""
    root = logging.getLogger()
    level, saved = root.level, structlog.get_config()

    def configure_into(environ: dict[str, str]) -> io.StringIO:
        stream = io.StringIO()
        configure(environ, stream=stream)
        return stream

    yield configure_into
    handlers = [
        h for h in root.handlers if not isinstance(h.formatter, structlog.stdlib.ProcessorFormatter)
    ]
    configure({}, stream=io.StringIO())  # resets every logger's level
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**saved)


def test_text_line_looks_like_the_original(log_to: LogTo) -> None:
    stream = log_to({"RESC_LOG": "info"})

    get_logger("resc.test").info("message", key="value")

    line = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} \[INFO\] - message key=value\n"
    assert re.fullmatch(line, stream.getvalue())


def test_text_line_quotes_values_with_spaces_and_decodes_bytes(
    log_to: LogTo,
) -> None:
    stream = log_to({})

    get_logger("resc.test").warning("pushed", task=b"trt/a b", n=3)

    assert stream.getvalue().endswith(' [WARN] - pushed task="trt/a b" n=3\n')


def test_json_format_writes_one_object_per_line(
    log_to: LogTo,
) -> None:
    stream = log_to({"RESC_LOG": "info", "RESC_LOG_FORMAT": "json"})

    get_logger("resc.test").info("message", key="value", event_bytes=b"acq/\xff")

    record = json.loads(stream.getvalue())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record.pop("time"))
    assert record == {
        "level": "info",
        "logger": "resc.test",
        "message": "message",
        "key": "value",
        "event_bytes": "acq/\\xff",
    }


@pytest.mark.parametrize(
    "environ",
    [{}, {"RESC_LOG": "warn,resc.other=debug"}, {"RUST_LOG": "info,resc::test=error"}],
)
def test_message_below_the_filter_writes_nothing(log_to: LogTo, environ: dict[str, str]) -> None:
    stream = log_to(environ)

    get_logger("resc.test").info("hidden")

    assert stream.getvalue() == ""


def test_module_level_overrides_the_default(
    log_to: LogTo,
) -> None:
    stream = log_to({"RUST_LOG": "warn,resc::test=debug"})

    get_logger("resc.test").debug("shown")
    get_logger("resc.other").debug("hidden")

    assert re.fullmatch(r"\S+ \[DEBUG\] - shown\n", stream.getvalue())


def test_resc_log_takes_precedence_over_rust_log(
    log_to: LogTo,
) -> None:
    stream = log_to({"RESC_LOG": "error", "RUST_LOG": "debug"})

    get_logger("resc.test").warning("hidden")

    assert stream.getvalue() == ""


@pytest.mark.parametrize(
    ("environ", "warning"),
    [
        ({"RESC_LOG": "inof"}, "RESC_LOG: 'inof' is not a level"),
        ({"RUST_LOG": "resc=loud"}, "RUST_LOG: 'loud' is not a level"),
    ],
)
def test_an_unknown_level_is_a_warning_naming_it_then_the_default(
    log_to: LogTo, environ: dict[str, str], warning: str
) -> None:
    stream = log_to(environ)

    get_logger("resc.test").info("hidden")
    get_logger("resc.test").warning("shown")

    first, second = stream.getvalue().splitlines()
    assert first.endswith(
        f" [WARN] - {warning} (off, error, warn, info, debug, trace): ignored; "
        "the default level is warn"
    )
    assert second.endswith(" [WARN] - shown")


def test_an_unknown_format_is_a_warning_naming_it_then_text(log_to: LogTo) -> None:
    stream = log_to({"RESC_LOG_FORMAT": "XML "})

    get_logger("resc.test").warning("shown")

    first, second = stream.getvalue().splitlines()
    assert first.endswith(
        " [WARN] - RESC_LOG_FORMAT: 'xml' is not a format (text, json): using text"
    )
    assert re.fullmatch(r"\S+ \[WARN\] - shown", second)


def test_a_long_event_or_task_is_logged_as_an_excerpt_with_its_size_and_digest(
    log_to: LogTo,
) -> None:
    stream = log_to({"RESC_LOG": "info"})
    event = b"acq/" + b"a" * 1_048_572
    digest = hashlib.sha256(event).hexdigest()[:12]

    get_logger("resc.test").info("event taken", input_task=event, task="t" * 300, short=b"s")

    shown = "acq/" + "a" * 196
    assert stream.getvalue().endswith(
        f' [INFO] - event taken input_task="{shown}... (1048576 bytes, sha256 {digest})" '
        f'task="{"t" * 200}... (300 bytes, sha256 {hashlib.sha256(b"t" * 300).hexdigest()[:12]})" '
        "short=s\n"
    )


def test_a_long_event_is_an_excerpt_in_json_too(log_to: LogTo) -> None:
    stream = log_to({"RESC_LOG_FORMAT": "json"})

    get_logger("resc.test").warning("event failed", input_task=b"\xff" * 10_000_000)

    record = json.loads(stream.getvalue())
    digest = hashlib.sha256(b"\xff" * 10_000_000).hexdigest()[:12]
    assert record["input_task"] == "\\xff" * 50 + f"... (10000000 bytes, sha256 {digest})"


def test_excerpt_keeps_short_values_and_multibyte_text_whole() -> None:
    assert excerpt(b"acq/1") == "acq/1"
    assert excerpt("é" * 150) == "é" * 150  # 300 bytes, 150 characters
    assert excerpt(b"x" * 200) == "x" * 200


def test_resc_libraries_speak_from_warnings_up_unless_named_and_lines_say_whose_they_are(
    log_to: LogTo,
) -> None:
    stream = log_to({"RESC_LOG": "debug"})
    logging.getLogger("redis.connection").debug("Failed to enable maintenance notifications")
    logging.getLogger("redis.connection").warning("something wrong")
    logging.getLogger("httpx").info("HTTP Request: GET http://x")
    logging.getLogger("myapp.handler").debug("a worker's own line")
    get_logger("resc.test").debug("ours")
    assert [line.split(" ", 1)[1] for line in stream.getvalue().splitlines()] == [
        "[WARN] redis.connection - something wrong",
        "[DEBUG] myapp.handler - a worker's own line",
        "[DEBUG] - ours",
    ]

    stream = log_to({"RESC_LOG": "info,redis=debug"})
    logging.getLogger("redis.connection").debug("Failed to enable maintenance notifications")
    assert stream.getvalue().endswith(
        " [DEBUG] redis.connection - Failed to enable maintenance notifications\n"
    )
