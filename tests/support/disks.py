"""A small real file system that really fills up: a tmpfs (root only)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_tmpfs(tmp_path: Path, size_mib: int) -> Iterator[Path]:
    """A tmpfs of ``size_mib`` mounted under ``tmp_path``; skips the test
    where it cannot be mounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    mount = tmp_path / "small-disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def big_file(path: Path, size: int) -> Path:
    """A file of ``size`` random bytes (whole MiB: one random MiB repeated)."""
    chunk = os.urandom(1024 * 1024)
    with path.open("wb") as handle:
        for _ in range(size // len(chunk)):
            handle.write(chunk)
    return path
