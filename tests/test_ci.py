"""CI runs exactly the README's test command, and that command tests on both servers
and in the browser, with nothing skipped for want of one."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_test_command() -> str:
    text = (ROOT / "README.md").read_text()
    intro = text.index("Install and run the tests")
    return next(
        line.strip()
        for line in text[intro:].splitlines()
        if line.startswith("    ") and "pytest" in line
    )


def test_ci_runs_the_readme_test_command():
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert lines[-1] == readme_test_command()


def test_the_test_command_installs_the_browser_when_it_is_absent():
    first = readme_test_command().split(" && ")[0]
    assert first.startswith("{ command -v chromium >/dev/null ||")
    assert "apt-get install -y -q chromium" in readme_test_command()


def test_the_test_command_names_each_server_so_a_missing_one_fails_the_run():
    runs = [run for run in readme_test_command().split(" && ") if " -m pytest" in run]
    assert [run.split(" ", 1)[0] for run in runs] == [
        "RESC_TEST_SERVER=redis",
        "RESC_TEST_SERVER=valkey",
    ]
