"""`resc test CONF [TESTFILE...]`: the config's unit tests."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from resc.core.errors import EXIT_OK, EXIT_USAGE

NAME = "test"
HELP = (
    "run a config's unit tests: events and the tasks they must make (an in-memory Redis, "
    "no network)"
)

EXIT_FAILED = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONF", help="config file (.hjson or .json)")
    parser.add_argument(
        "files",
        metavar="TESTFILE",
        nargs="*",
        type=Path,
        help="test files (default: CONF's name with .tests.hjson or .tests.json, if there); "
        "the cases under tests: in CONF always run",
    )


def _fail(problems: list[str]) -> int:
    for problem in problems:
        print(f"resc: {problem}", file=sys.stderr)
    return EXIT_USAGE


def main(args: argparse.Namespace) -> int:
    from resc.config.load import config_from_source
    from resc.config.source import read_source
    from resc.core.errors import ConfigError
    from resc.ops import case_runner

    config_path = Path(args.config)
    files: list[Path] = args.files
    if not files:
        found = case_runner.default_test_file(config_path)
        files = [found] if found is not None else []
    try:
        source = read_source(config_path)
        config = config_from_source(source)
        cases = case_runner.load_cases(config, source, files)
    except ConfigError as exc:
        return _fail(exc.problems)
    if not cases:
        return _fail(
            [
                f"{config_path}: no test cases: the config has no tests: and no test file was "
                f"given or found ({config_path.stem}.tests.hjson next to it)"
            ]
        )
    failed = 0
    for case in cases:
        report = case_runner.run_case(config, case)
        print(report.line)
        for line in report.details:
            print(f"    {line}")
        failed += not report.passed
    passed = len(cases) - failed
    print(f"{passed} passed" + (f", {failed} failed" if failed else ""))
    return EXIT_FAILED if failed else EXIT_OK
