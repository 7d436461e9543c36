"""Untrusted path checks: every forbidden form is refused with a clear message."""

from __future__ import annotations

import pytest

from p2pcp.blobs.names import (
    MAX_COMPONENT_BYTES,
    check_manifest_paths,
    check_relative_path,
    fold_path,
)
from p2pcp.core.errors import UnsafePathError


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "empty path"),
        ("/etc/passwd", "absolute"),
        ("//server/share", "absolute"),
        ("..", "'..'"),
        ("a/../b", "'..'"),
        ("a/..", "'..'"),
        (".", "'.'"),
        ("a/./b", "'.'"),
        ("a//b", "empty component"),
        ("a/", "empty component"),
        ("a\x00b", "NUL"),
        ("a\nb", "control"),
        ("a\x1bb", "control"),
        ("a\x7fb", "control"),
        ("a\x85b", "control"),
        ("a\\b", "backslash"),
        ("..\\evil", "backslash"),
        ("C:", "drive"),
        ("c:/windows", "drive"),
        ("a/D:evil", "drive"),
        ("x" * (MAX_COMPONENT_BYTES + 1), "longer than 255"),
        ("é" * 128, "longer than 255"),
        ("/".join(["x" * 200] * 21), "longer than 4096"),
        ("bad\udcffname", "UTF-8"),
    ],
)
def test_forbidden_paths(path: str, reason: str) -> None:
    with pytest.raises(UnsafePathError) as caught:
        check_relative_path(path)
    message = str(caught.value)
    assert reason in message
    assert "\n" not in message
    assert len(message) < 200


@pytest.mark.parametrize(
    "path",
    [
        "a",
        "a/b/c.txt",
        "photos/ünïcode 日本.jpg",
        "a/bc:d",
        "CON",
        "a/.hidden",
        "x" * MAX_COMPONENT_BYTES,
        "a/...",
        "a b/ c",
    ],
)
def test_allowed_paths(path: str) -> None:
    assert check_relative_path(path) == path
    check_manifest_paths([path])


def test_message_names_the_path() -> None:
    with pytest.raises(UnsafePathError, match=r"'a/\.\./b'"):
        check_relative_path("a/../b")
    with pytest.raises(UnsafePathError, match=r"\.\.\.:"):
        check_relative_path("/" + "x" * 500)


@pytest.mark.parametrize(
    ("paths", "reason"),
    [
        (["d/a", "d/a"], "twice"),
        (["d/File.txt", "d/file.txt"], "collides"),
        (["d/\u00e9t\u00e9", "d/e\u0301te\u0301"], "collides"),
        (["d/stra\u00dfe", "d/STRASSE"], "collides"),
        (["d/a", "d/a/b"], "folder"),
        (["d/a/b", "d/a"], "folder"),
        (["d/A", "d/a/b"], "folder"),
        (["d/x", "d/.."], "'..'"),
    ],
)
def test_forbidden_sets(paths: list[str], reason: str) -> None:
    with pytest.raises(UnsafePathError, match=reason):
        check_manifest_paths(paths)


def test_allowed_sets() -> None:
    check_manifest_paths([])
    check_manifest_paths(["d/a/x", "d/a/y", "d/ab", "d/A/z"])
    assert fold_path("A/\u00c5") == fold_path("a/A\u030a")
