"""Logging: env_logger-style filters, and the text and JSON line formats."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator

import pytest
import structlog

from resc.core.logs import TRACE, configure, get_logger, parse_filter

WARN, INFO, DEBUG = logging.WARNING, logging.INFO, logging.DEBUG
LogTo = Callable[[dict[str, str]], io.StringIO]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", (WARN, {})),
        ("info", (INFO, {})),
        ("DEBUG", (DEBUG, {})),
        ("warn,resc.fetch=debug", (WARN, {"resc.fetch": DEBUG})),
        ("resc::fetch=debug", (WARN, {"resc.fetch": DEBUG})),
        ("resc.fetch", (WARN, {"resc.fetch": TRACE})),
        (" info , resc = trace ", (INFO, {"resc": TRACE})),
        ("resc=loud,info", (INFO, {})),  # an unknown level: the directive is ignored
        ("debug/some regex", (DEBUG, {})),
    ],
)
def test_parse_filter(spec: str, expected: tuple[int, dict[str, int]]) -> None:
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
