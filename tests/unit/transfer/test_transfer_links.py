"""The receiver's links (transfer/links.py) on a real folder: what the plan
refuses before anything is written, and how links are placed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from p2pcp.blobs.collection import Entry, Link, Manifest
from p2pcp.core.errors import WouldOverwriteError
from p2pcp.transfer import events
from p2pcp.transfer.links import TEMPORARY_PREFIX, place_links, plan_links


def manifest(*links: Link) -> Manifest:
    return Manifest.folder("d", [Entry("d/f", 1, bytes(32))], [], links=links)


def test_plan_and_place(tmp_path: Path) -> None:
    got: list[object] = []
    wanted = manifest(
        Link("d/new/l", "../f"), Link("d/same", "f"), Link("d/abs", "/x"), Link("d/up", "..")
    )
    (tmp_path / "d").mkdir()
    os.symlink("f", tmp_path / "d" / "same")
    plan = plan_links(tmp_path, wanted, replace=False, allow_unsafe=False)
    assert [link.path for link in plan.to_place] == ["d/new/l"]
    assert [link.path for link in plan.present] == ["d/same"]
    assert [link.path for link, _reason in plan.refused] == ["d/abs", "d/up"]
    place_links(tmp_path, plan, got.append)
    assert os.readlink(tmp_path / "d" / "new" / "l") == "../f"
    assert not (tmp_path / "d" / "abs").exists() and not (tmp_path / "d" / "abs").is_symlink()
    assert [type(event) for event in got] == [
        events.LinkSkipped,
        events.LinkSkipped,
        events.LinkPlaced,
        events.LinkPlaced,
    ]
    assert not [p for p in (tmp_path / "d").rglob("*") if p.name.startswith(TEMPORARY_PREFIX)]
    unsafe = plan_links(tmp_path, wanted, replace=False, allow_unsafe=True)
    assert not unsafe.refused and len(unsafe.to_place) == 2 and len(unsafe.present) == 2


def test_a_link_in_place_of_a_folder_is_never_written_through(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    (out / "d").mkdir(parents=True)
    os.symlink(elsewhere, out / "d" / "sub")
    for replace in (False, True):
        with pytest.raises(WouldOverwriteError, match="symbolic link"):
            plan_links(out, manifest(Link("d/sub/l", "x")), replace=replace, allow_unsafe=False)
    assert list(elsewhere.iterdir()) == []


def test_what_is_at_the_link_s_name(tmp_path: Path) -> None:
    (tmp_path / "d" / "folder").mkdir(parents=True)
    (tmp_path / "d" / "file").write_text("x")
    os.symlink("other", tmp_path / "d" / "link")
    for name in ("folder", "file", "link"):
        wanted = manifest(Link(f"d/{name}", "f"))
        if name == "folder":
            with pytest.raises(WouldOverwriteError, match="is a folder"):
                plan_links(tmp_path, wanted, replace=True, allow_unsafe=False)
            continue
        with pytest.raises(WouldOverwriteError, match="--force"):
            plan_links(tmp_path, wanted, replace=False, allow_unsafe=False)
        plan = plan_links(tmp_path, wanted, replace=True, allow_unsafe=False)
        place_links(tmp_path, plan, lambda event: None)
        assert os.readlink(tmp_path / "d" / name) == "f"
