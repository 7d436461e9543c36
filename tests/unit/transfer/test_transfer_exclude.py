"""What a send leaves out (transfer/exclude.py through source.scan_paths):
command-line patterns relative to each top-level item, nested .gitignore
files with negation, pruning of excluded folders, and send --links'
scan of symbolic links."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from p2pcp.blobs.collection import Link
from p2pcp.core.errors import UsageError
from p2pcp.transfer.exclude import ScanFilter, read_pattern_file
from p2pcp.transfer.source import import_scan, scan_paths


def tree(root: Path, paths: list[str]) -> None:
    """Files (a name) and folders (a name ending in /) under ``root``."""
    for path in paths:
        target = root / path
        if path.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path)


def sent(
    paths: list[Path], scan_filter: ScanFilter | None = None, *, links: bool = False
) -> set[str]:
    scan = scan_paths(paths, scan_filter=scan_filter, links=links)
    return (
        {found.rel for found in scan.files}
        | {d + "/" for d in scan.empty_dirs}
        | {link.path + "@" for link in scan.links}
    )


def test_command_line_patterns_are_relative_to_each_item(tmp_path: Path) -> None:
    tree(
        tmp_path / "proj",
        [
            "a.tmp",
            "src/b.tmp",
            "src/keep.py",
            "build/out.o",
            "src/build/gen.c",
            "node_modules/x/y.js",
            "src/node_modules",  # a file: a folder-only pattern leaves it
        ],
    )
    tree(tmp_path / "other", ["build/z", "c.tmp"])
    scan_filter = ScanFilter.build(["*.tmp", "/build", "node_modules/"])
    assert sent([tmp_path / "proj", tmp_path / "other"], scan_filter) == {
        "proj/src/keep.py",
        "proj/src/build/gen.c",  # /build is anchored at the top of each item
        "proj/src/node_modules",
        "other/",  # every entry excluded: sent as an empty folder
    }


def test_nothing_excluded_without_a_filter(tmp_path: Path) -> None:
    tree(tmp_path / "d", ["a.tmp", ".git/HEAD", ".gitignore"])
    (tmp_path / "d" / ".gitignore").write_text("*.tmp\n")
    assert sent([tmp_path / "d"]) == {"d/a.tmp", "d/.git/HEAD", "d/.gitignore"}
    assert sent([tmp_path / "d"], ScanFilter.build([])) == sent([tmp_path / "d"])
    assert not ScanFilter.build(["", "# only a comment"]).is_active


def test_nested_gitignore_and_negation(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    tree(
        root,
        [
            ".git/config",
            "app.log",
            "keep.log",
            "notes.txt",
            "sub/debug.log",
            "sub/important.log",
            "sub/deeper/x.log",
            "sub/deeper/x.txt",
            "cache/big.bin",
            "docs/cache/page.html",
            "other/tmp/t",
        ],
    )
    (root / ".gitignore").write_text("# comment\n\n*.log\n!keep.log\n/cache/\ntmp\n")
    # Deeper rules override outer ones; paths are relative to their folder.
    (root / "sub" / ".gitignore").write_text("!important.log\n/deeper/*.txt\n")
    assert sent([root], ScanFilter(use_gitignore=True)) == {
        "repo/.gitignore",
        "repo/keep.log",
        "repo/notes.txt",
        "repo/sub/.gitignore",
        "repo/sub/important.log",
        "repo/docs/cache/page.html",  # /cache/ is anchored to repo/
        "repo/other/",  # every entry excluded: sent as an empty folder
        "repo/sub/deeper/",
    }


def test_command_line_wins_over_gitignore(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    tree(root, ["a.log", "b.txt"])
    (root / ".gitignore").write_text("!a.log\n*.txt\n")
    scan_filter = ScanFilter.build(["*.log", "!b.txt"], use_gitignore=True)
    assert sent([root], scan_filter) == {"repo/.gitignore", "repo/b.txt"}


def test_an_excluded_folder_is_never_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "proj"
    tree(root, ["src/a.py", "node_modules/pkg/index.js"])
    listed: list[str] = []
    real_scandir = os.scandir

    def recording_scandir(path: str) -> Any:
        listed.append(os.path.relpath(path, root))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", recording_scandir)  # a spy: the real call still runs
    scan = scan_paths([root], scan_filter=ScanFilter.build(["node_modules/"]))
    assert [found.rel for found in scan.files] == ["proj/src/a.py"]
    assert scan.skipped == [] and scan.excluded == 1
    assert sorted(listed) == [".", "src"]


def test_a_top_level_path_is_never_excluded(tmp_path: Path) -> None:
    tree(tmp_path, ["x.tmp", "build/a.tmp", "build/b"])
    scan_filter = ScanFilter.build(["*.tmp", "build/"])
    assert sent([tmp_path / "x.tmp", tmp_path / "build"], scan_filter) == {"x.tmp", "build/b"}


def test_exclude_from_file(tmp_path: Path) -> None:
    patterns = tmp_path / "excludes"
    patterns.write_bytes(b"# caches\r\n*.pyc\r\n\r\n__pycache__/\n!keep.pyc\n\\#literal\n")
    tree(tmp_path / "d", ["a.py", "a.pyc", "keep.pyc", "__pycache__/m.pyc", "#literal"])
    scan_filter = ScanFilter.build(["x"], patterns)
    assert scan_filter.patterns[0] == "x"
    assert sent([tmp_path / "d"], scan_filter) == {"d/a.py", "d/keep.pyc"}


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read it"), (b"a\x00b", "NUL"), (b"x" * (1024 * 1024 + 1), "larger than")],
)
def test_a_bad_exclude_from_file_is_a_usage_error(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "patterns"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UsageError, match=message):
        read_pattern_file(path)
    with pytest.raises(UsageError, match="--exclude-from"):
        ScanFilter.build([], path)


def test_non_utf8_names_are_matched_as_their_bytes(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    name = b"\xe9t\xe9.tmp".decode("utf-8", "surrogateescape")
    (root / name).write_text("x")
    (root / "ok").write_text("x")
    patterns = tmp_path / "p"
    patterns.write_bytes(b"\xe9t\xe9.*\n")
    assert sent([root], ScanFilter.build([], patterns)) == {"d/ok"}


def test_links_are_scanned_as_links(tmp_path: Path) -> None:
    root = tmp_path / "d"
    tree(root, ["file", "sub/inner"])
    os.symlink("file", root / "to_file")
    os.symlink("sub", root / "to_dir")
    os.symlink("../../outside", root / "sub" / "escaping")
    os.symlink("missing", root / "broken")
    odd = b"t\xff\nx".decode("utf-8", "surrogateescape")
    os.symlink(odd, root / "odd")
    scan = scan_paths([root], links=True)
    assert scan.links == [
        Link("d/broken", "missing"),
        Link("d/odd", odd),
        Link("d/to_dir", "sub"),
        Link("d/to_file", "file"),
        Link("d/sub/escaping", "../../outside"),
    ]
    assert {found.rel for found in scan.files} == {"d/file", "d/sub/inner"}
    assert scan.skipped == []
    manifest = import_scan(scan).manifest
    assert [link.path for link in manifest.links][:2] == ["d/broken", "d/odd"]
    assert len(manifest.links) == 5


def test_without_links_today_s_rules_hold(tmp_path: Path) -> None:
    root = tmp_path / "d"
    tree(root, ["file", "sub/inner"])
    os.symlink("file", root / "to_file")
    os.symlink("sub", root / "to_dir")
    scan = scan_paths([root])
    assert scan.links == []
    assert {found.rel for found in scan.files} == {"d/file", "d/sub/inner", "d/to_file"}
    assert scan.skipped == ["d/to_dir (link to a folder)"]
    assert import_scan(scan).manifest.links == ()


def test_a_folder_of_only_links_is_sent(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    os.symlink("elsewhere", root / "l")
    collection = import_scan(scan_paths([root], links=True))
    assert collection.manifest.links == (Link("d/l", "elsewhere"),)
    assert collection.manifest.files == () and collection.manifest.empty_dirs == ()


def test_excluded_links_and_gitignored_links(tmp_path: Path) -> None:
    root = tmp_path / "d"
    tree(root, ["f"])
    os.symlink("f", root / "a.lnk")
    os.symlink("f", root / "b")
    os.symlink("f", root / "dirlink")
    (root / ".gitignore").write_text("dirlink/\nb\n")  # a link is a file to git
    scan_filter = ScanFilter.build(["*.lnk"], use_gitignore=True)
    scan = scan_paths([root], scan_filter=scan_filter, links=True)
    assert scan.links == [Link("d/dirlink", "f")]
    assert scan.excluded == 2
