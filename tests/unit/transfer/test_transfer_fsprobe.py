"""The receiver's file system probe, on this real file system, and the
collision rules, given the probe's result for other file systems."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from p2pcp.blobs.collection import Entry, Link, Manifest
from p2pcp.core.errors import EXIT_UNEXPECTED, StorageError
from p2pcp.transfer.fsprobe import FileSystemTraits, find_unfit_names, probe_folder
from p2pcp.transfer.store import SHOWN_PROBLEMS, Store, check_names_fit

CASE_INSENSITIVE = FileSystemTraits(is_case_insensitive=True)
NORMALIZING = FileSystemTraits(is_normalizing=True)
APFS_LIKE = FileSystemTraits(is_case_insensitive=True, is_normalizing=True, refuses_non_utf8=True)
NFC = "top/\u00e9t\u00e9"
NFD = "top/e\u0301te\u0301"


@pytest.mark.skipif(sys.platform != "linux", reason="Linux temporary folders are case-sensitive")
def test_probe_finds_a_plain_file_system_and_leaves_nothing(tmp_path: Path) -> None:
    # ext4, tmpfs, overlayfs without casefold: every name is its own bytes.
    assert probe_folder(tmp_path) == FileSystemTraits()
    assert list(tmp_path.iterdir()) == []


def test_probe_of_a_folder_it_cannot_write_in_assumes_a_plain_file_system(
    tmp_path: Path,
) -> None:
    assert probe_folder(tmp_path / "missing") == FileSystemTraits()


def test_plain_file_system_holds_every_twin() -> None:
    files = ["top/README", "top/readme", NFC, NFD, "top/bad\udcff"]
    assert find_unfit_names(files, ["top/Empty", "top/empty"], FileSystemTraits()) == []


def test_case_twins_collide_on_a_case_insensitive_file_system() -> None:
    problems = find_unfit_names(["top/README", "top/readme", "top/other"], [], CASE_INSENSITIVE)
    assert problems == [
        "top/README and top/readme would be one file here: this file system ignores case"
    ]


def test_folders_that_merge_are_fine_but_their_twin_files_are_not() -> None:
    assert find_unfit_names(["top/Docs/a", "top/docs/b"], [], CASE_INSENSITIVE) == []
    problems = find_unfit_names(["top/Docs/a", "top/docs/A"], [], CASE_INSENSITIVE)
    assert len(problems) == 1 and "top/Docs/a and top/docs/A" in problems[0]


def test_a_file_and_a_folder_that_become_one_name_collide() -> None:
    problems = find_unfit_names(["top/notes", "top/NOTES/today"], [], CASE_INSENSITIVE)
    assert problems == [
        "top/NOTES and top/notes would be one name here: this file system ignores case"
    ]
    problems = find_unfit_names(["top/x"], ["top/X"], CASE_INSENSITIVE)
    assert len(problems) == 1 and "one name" in problems[0]


def test_normalization_twins_collide_only_where_names_are_normalized() -> None:
    assert find_unfit_names([NFC, NFD], [], CASE_INSENSITIVE) == []
    problems = find_unfit_names([NFC, NFD], [], NORMALIZING)
    assert len(problems) == 1 and "NFC and NFD" in problems[0]
    # Case folding and normalization together (APFS, casefold ext4).
    problems = find_unfit_names(["top/\u00c9T\u00c9", NFD], [], APFS_LIKE)
    assert len(problems) == 1 and "would be one file" in problems[0]


def test_non_utf8_names_are_refused_once_per_outermost_name() -> None:
    files = ["top/bad\udcff/a", "top/bad\udcff/b", "top/ok\udcfe", "top/fine"]
    problems = find_unfit_names(files, [], APFS_LIKE)
    assert problems == [
        "the folder name top/bad\\xff is not UTF-8, which this file system refuses",
        "the file name top/ok\\xfe is not UTF-8, which this file system refuses",
    ]
    assert find_unfit_names(files, [], CASE_INSENSITIVE) == []


def test_problems_are_one_error_line_with_exit_1() -> None:
    twins = [f"top/name{index}" for index in range(5)] + [f"top/NAME{index}" for index in range(5)]
    manifest = Manifest.folder("top", [Entry(path, 1, bytes(32)) for path in twins], [])
    check_names_fit(manifest, FileSystemTraits())
    with pytest.raises(StorageError) as caught:
        check_names_fit(manifest, CASE_INSENSITIVE)
    message = str(caught.value)
    assert caught.value.exit_code == EXIT_UNEXPECTED
    assert "\n" not in message
    assert message.count("would be one file") == SHOWN_PROBLEMS
    assert f"and {5 - SHOWN_PROBLEMS} more" in message
    assert "nothing was written" in message and "--out" in message


def test_control_characters_in_refused_names_are_escaped() -> None:
    problems = find_unfit_names(["top/a\nb", "top/A\nB"], [], CASE_INSENSITIVE)
    assert len(problems) == 1 and "\n" not in problems[0] and "a\\nb" in problems[0]


def test_plan_on_this_file_system_accepts_case_and_normalization_twins(tmp_path: Path) -> None:
    files = [Entry(path, 1, bytes([index]) * 32) for index, path in enumerate(["top/A", "top/a"])]
    files += [Entry(NFC, 1, b"\x07" * 32), Entry(NFD, 1, b"\x08" * 32)]
    plan = Store(tmp_path, Manifest.folder("top", files, []), bytes(32), force=False).plan()
    assert len(plan.to_fetch) == 4
    assert list(tmp_path.iterdir()) == []


def test_a_link_is_checked_with_the_files_in_the_one_probe() -> None:
    # A link named like a file but for its case: one name where case folds.
    manifest = Manifest.folder(
        "top", [Entry("top/readme", 1, bytes(32))], [], links=[Link("top/README", "readme")]
    )
    check_names_fit(manifest, FileSystemTraits())
    with pytest.raises(StorageError, match="would be one file"):
        check_names_fit(manifest, CASE_INSENSITIVE)
