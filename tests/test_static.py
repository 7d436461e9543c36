"""Lint, format, type and spelling checks run as tests, so CI runs them too."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ["p2pcp", "tests", "bench"]


def _run(module: str, *args: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install -e '.[test]')")
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]


def test_ruff_lint() -> None:
    _run("ruff", "check", *TARGETS)


def test_ruff_format() -> None:
    _run("ruff", "format", "--check", *TARGETS)


def test_mypy_strict() -> None:
    _run("mypy")


def test_codespell() -> None:
    _run("codespell_lib", "p2pcp", "tests", "bench", "docs", "README.md", "CHANGELOG.md")
