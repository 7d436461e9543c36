"""Untrusted path checks: every forbidden form is refused with a clear message."""

from __future__ import annotations

import pytest

from p2pcp.blobs.names import (
    MAX_COMPONENT_BYTES,
    case_fold,
    check_manifest_paths,
    check_relative_path,
    display_path,
    fold_path,
    nfc,
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


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("photos/été 日本.jpg", "photos/été 日本.jpg"),
        ("a\nb", "a\\nb"),
        ("a\tb\rc", "a\\tb\\rc"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("del\x7f", "del\\x7f"),
        ("nel\x85", "nel\\u0085"),
        ("back\\slash", "back\\\\slash"),
        ("c:notes.txt", "c:notes.txt"),
        ("latin1-\udce9t\udce9", "latin1-\\xe9t\\xe9"),
        ("rtl\u202etxt.exe", "rtl\\u202etxt.exe"),
        ("line\u2028sep", "line\\u2028sep"),
    ],
)
def test_display_path_escapes_what_a_terminal_would_act_on(path: str, shown: str) -> None:
    assert display_path(path) == shown


def test_display_path_keeps_start_and_end_of_a_long_path() -> None:
    path = "top/" + "/".join(["deep"] * 900) + "/\x1bfile.txt"
    shown = display_path(path)
    assert len(shown) <= 100
    assert shown.startswith("top/deep/") and shown.endswith("/\\x1bfile.txt")
    assert "..." in shown and "\x1b" not in shown
    # An escape is never cut in half.
    for width in range(1, 60):
        assert "\x1b" not in display_path("\x1b" * width)
        shown = display_path("\x1b" * width)
        assert shown.replace("...", "") == "\\x1b" * shown.count("\\x1b")


def test_case_fold_and_nfc_are_separate() -> None:
    assert case_fold("README") == case_fold("readme")
    assert case_fold("Stra\u00dfe") == case_fold("STRASSE")
    assert case_fold("\u00e9") != case_fold("e\u0301")
    assert nfc("e\u0301") == nfc("\u00e9") == "\u00e9"
    assert nfc("README") != nfc("readme")
    assert nfc("bad\udcff") == "bad\udcff"
