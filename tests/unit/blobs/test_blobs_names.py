"""Untrusted path checks: every forbidden form is refused with a clear message."""

from __future__ import annotations

import pytest

from p2pcp.blobs.names import (
    MAX_COMPONENT_BYTES,
    case_fold,
    check_manifest_paths,
    check_relative_path,
    display_path,
    nfc,
    path_bytes,
    unsafe_reason,
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
        ("x" * (MAX_COMPONENT_BYTES + 1), "longer than 255"),
        ("é" * 128, "longer than 255"),
        ("\udcff" * 256, "longer than 255"),
        ("/".join(["x" * 200] * 21), "longer than 4096"),
        ("x" * 5000, "longer than 4096"),
        ("bad\ud800name", "no byte sequence"),
        ("bad\udc41name", "no byte sequence"),
        ("\udcc3\udca9", "valid UTF-8"),
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
        # Legal on Linux, so legal in a manifest (a receiver whose file
        # system cannot hold one says so itself).
        "c:notes.txt",
        "C:",
        "a/D:evil",
        "back\\slash",
        "..\\not-a-parent",
        "new\nline",
        "esc\x1b[31m",
        "del\x7f and nel\x85",
        "latin1-\udce9t\udce9",
        "\udcff" * MAX_COMPONENT_BYTES,
    ],
)
def test_allowed_paths(path: str) -> None:
    assert check_relative_path(path) == path
    check_manifest_paths([path])


def test_unsafe_reason_says_why_without_raising() -> None:
    assert unsafe_reason("a/b\\c\n") is None
    assert unsafe_reason("a/../b") == "'..' component"
    assert unsafe_reason("d/" + "x" * 4095) == "longer than 4096 bytes"
    assert unsafe_reason(b"a") == "a path must be a string, not bytes"  # type: ignore[arg-type]


def test_path_bytes_are_the_names_on_disk() -> None:
    assert path_bytes("latin1-\udce9") == b"latin1-\xe9"
    assert path_bytes("r\u00e9sum\u00e9") == "r\u00e9sum\u00e9".encode()
    raw = b"\xff\xfe/\xc3\xa9"
    assert path_bytes(raw.decode("utf-8", "surrogateescape")) == raw


def test_message_names_the_path_escaped() -> None:
    with pytest.raises(UnsafePathError, match=r"'a/\.\./b'"):
        check_relative_path("a/../b")
    with pytest.raises(UnsafePathError, match=r"\.\.\.x+':"):
        check_relative_path("/" + "x" * 500)
    with pytest.raises(UnsafePathError) as caught:
        check_manifest_paths(["d/\x1b[2J\n", "d/\x1b[2J\n/x"])
    assert str(caught.value) == (
        "unsafe path in manifest 'd/\\x1b[2J\\n': is also a folder of 'd/\\x1b[2J\\n/x'"
    )


@pytest.mark.parametrize(
    ("paths", "reason"),
    [
        (["d/a", "d/a"], "twice"),
        (["d/a", "d/b", "d/a"], "twice"),
        (["d/a", "d/a/b"], "folder"),
        (["d/a/b", "d/a"], "folder"),
        (["d/a/b/c/d", "d/a/b"], "folder"),
        (["d/a", "d/a b", "d/a.txt", "d/a/b"], "folder"),
        (["d/x", "d/.."], "'..'"),
    ],
)
def test_forbidden_sets(paths: list[str], reason: str) -> None:
    with pytest.raises(UnsafePathError, match=reason):
        check_manifest_paths(paths)


def test_allowed_sets() -> None:
    check_manifest_paths([])
    check_manifest_paths(["d/a/x", "d/a/y", "d/ab", "d/a b", "d/a.b/c", "d/A/z"])
    # Twins that only a case-insensitive or normalizing file system merges.
    check_manifest_paths(["d/File.txt", "d/file.txt"])
    check_manifest_paths(["d/\u00e9t\u00e9", "d/e\u0301te\u0301"])
    check_manifest_paths(["d/stra\u00dfe", "d/STRASSE"])
    check_manifest_paths(["d/a", "d/A/b"])


def test_deep_trees_are_checked_in_one_sort() -> None:
    deep = "/".join(["d"] * 2000)
    paths = [deep[: 2 * level + 1] + "/f" for level in range(2000)]
    check_manifest_paths(paths)
    with pytest.raises(UnsafePathError, match="folder"):
        check_manifest_paths([*paths, deep[:999]])


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
