"""The code checks CI relies on, as tests: lint, format, types, and a wheel that holds
every file resc needs at run time."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_lint_is_clean():
    done = run(tool("ruff"), "check", "resc", "tests", "examples", "bench")
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format_is_clean():
    done = run(tool("ruff"), "format", "--check", "resc", "tests", "examples", "bench")
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_strict_on_resc():
    done = run(tool("mypy"), "resc")
    assert done.returncode == 0, done.stdout + done.stderr


def test_wheel_contains_the_lua_scripts(tmp_path: Path):
    done = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), ".")
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = tmp_path.glob("resc-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    scripts = {p.relative_to(ROOT).as_posix() for p in (ROOT / "resc").rglob("*.lua")}
    assert scripts and scripts <= names
    assets = {p.relative_to(ROOT).as_posix() for p in (ROOT / "resc/dashboard/static").iterdir()}
    assert assets and assets <= names
