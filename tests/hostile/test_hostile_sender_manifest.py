"""A sender whose manifest is hostile: names that escape the output folder
or collide, absurd entry counts and sizes. The receiver must refuse before it
writes anything, within bounded time and memory.

The manifests are verified blobs (the ticket names their root), so only
the receiver's own checks stand between them and the disk.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import unicodedata
from pathlib import Path

import pytest

from p2pcp.blobs.collection import MAX_MANIFEST_BYTES, MAX_MANIFEST_ENTRIES, Manifest
from p2pcp.blobs.encoding import ALL, RangeDecoder, SizeKnown, encode_header
from p2pcp.blobs.tree import LEAF_SIZE
from p2pcp.core.errors import (
    EXIT_INTEGRITY,
    EXIT_UNEXPECTED,
    IntegrityError,
    P2pcpError,
    RemoteProtocolError,
    StorageError,
    UnsafePathError,
    WouldOverwriteError,
)
from tests.support.peers import (
    Blob,
    LazyBlob,
    blob_answer,
    fetch,
    hostile_sender,
    lazy_answer,
    manifest_blob,
    raw_manifest,
)

from .harness import files_under, final_files, snapshot

PB = 2**50
# Refused while downloading (today), or from the header (RangeDecoder max_size).
TOO_LARGE = r"manifest is larger than|more than the [\d,]+ accepted"
DATA = b"pwned\n"
ROOT = Blob.of(DATA).root

# name -> (manifest bytes, the error, words of its message)
HOSTILE_NAMES: dict[str, tuple[bytes, type[P2pcpError], str]] = {
    "dotdot-in-folder": (
        raw_manifest("d", [("d/../../escaped", len(DATA), ROOT)]),
        UnsafePathError,
        "'..' component",
    ),
    "dotdot-as-name": (
        raw_manifest("..", [("..", len(DATA), ROOT)]),
        UnsafePathError,
        "'..' component",
    ),
    "dotdot-several-items": (
        raw_manifest("x", [("../escaped", len(DATA), ROOT)], flags=1),
        UnsafePathError,
        "'..' component",
    ),
    "absolute-path": (
        raw_manifest("d", [("/tmp/escaped", len(DATA), ROOT)]),
        UnsafePathError,
        "absolute path",
    ),
    "absolute-name": (
        raw_manifest("/tmp/escaped", [("/tmp/escaped", len(DATA), ROOT)]),
        UnsafePathError,
        "absolute path",
    ),
    "not-under-name": (
        raw_manifest("d", [("e/x", len(DATA), ROOT)]),
        UnsafePathError,
        "is not under 'd'",
    ),
    "nul": (raw_manifest("d", [("d/a\x00b", len(DATA), ROOT)]), UnsafePathError, "NUL"),
    "duplicate-file": (
        raw_manifest("d", [("d/a", len(DATA), ROOT), ("d/a", len(DATA), ROOT)]),
        RemoteProtocolError,
        "not sorted or repeated",
    ),
    "duplicate-dir": (
        raw_manifest("d", [], ["d/x", "d/x"]),
        RemoteProtocolError,
        "not sorted or repeated",
    ),
    "file-is-also-a-folder": (
        raw_manifest("d", [("d/a", len(DATA), ROOT), ("d/a/b", len(DATA), ROOT)]),
        UnsafePathError,
        "is also a folder",
    ),
    "unsorted": (
        raw_manifest("d", [("d/b", len(DATA), ROOT), ("d/a", len(DATA), ROOT)]),
        RemoteProtocolError,
        "not sorted",
    ),
    "empty": (raw_manifest("d"), RemoteProtocolError, "lists nothing"),
    "file-and-dir-same-name": (
        raw_manifest("d", [("d/a", len(DATA), ROOT)], ["d/a"]),
        UnsafePathError,
        "listed twice",
    ),
    "empty-component": (
        raw_manifest("d", [("d//x", len(DATA), ROOT)]),
        UnsafePathError,
        "empty component",
    ),
    "long-path": (
        raw_manifest("d", [("d/" + "x/" * 2047 + "x", len(DATA), ROOT)]),
        RemoteProtocolError,
        "longer than 4096",
    ),
    "long-component": (
        raw_manifest("d", [("d/" + "x" * 256, len(DATA), ROOT)]),
        UnsafePathError,
        "longer than 255",
    ),
}


async def _offer_manifest(
    tmp_path: Path, manifest_bytes: bytes, total: int, *, file_blob: Blob | None = None
) -> None:
    manifest = Blob.of(manifest_bytes)
    async with hostile_sender() as sender:
        sender.answers[manifest.root] = blob_answer(manifest)
        for blob in [file_blob or Blob.of(DATA)]:
            sender.answers[blob.root] = blob_answer(blob)
        await fetch(sender.ticket(manifest.root, total), tmp_path / "out")


@pytest.mark.parametrize("name", list(HOSTILE_NAMES))
def test_hostile_names_are_refused_before_anything_is_written(tmp_path: Path, name: str) -> None:
    data, error, words = HOSTILE_NAMES[name]
    total = len(DATA) * data.count(ROOT)
    with pytest.raises(error) as caught:
        asyncio.run(_offer_manifest(tmp_path, data, total))
    assert caught.value.exit_code == EXIT_INTEGRITY
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)  # one line, whatever the name held
    assert snapshot(tmp_path) == {}  # not even the output folder was created


# Names that are unsafe nowhere: legal on Linux, so legal in a manifest. On
# this Linux output folder they arrive as they are, inside it; the backslash
# and drive look-alikes are plain characters here, never separators.
LEGAL_NAMES = [
    "d/..\\..\\escaped",
    "d/C:escaped",
    "d/a\nb",
    "d/\x1b[2J",
    "d/\udcff",
    "d/README",
    "d/readme",
    "d/" + unicodedata.normalize("NFC", "r\u00e9sum\u00e9"),
    "d/" + unicodedata.normalize("NFD", "r\u00e9sum\u00e9"),
]


def test_names_unsafe_nowhere_arrive_inside_the_output_folder(tmp_path: Path) -> None:
    files = sorted(
        ((path, len(DATA), ROOT) for path in LEGAL_NAMES),
        key=lambda entry: entry[0].encode("utf-8", "surrogateescape"),
    )
    asyncio.run(_offer_manifest(tmp_path, raw_manifest("d", files), len(DATA) * len(files)))
    out = tmp_path / "out"
    assert final_files(out) == {path: DATA for path in LEGAL_NAMES}
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert {rel.split("/")[0] for rel in snapshot(tmp_path)} == {"out"}


def test_existing_symlink_in_the_output_is_not_written_through(tmp_path: Path) -> None:
    """The output folder already holds ``d -> elsewhere``: a manifest naming
    ``d/x`` must not write into ``elsewhere``."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(elsewhere, out / "d")
    # The link is the receiver's own state, not the sender's doing: exit 5.
    with pytest.raises(WouldOverwriteError, match="symbolic link"):
        asyncio.run(
            _offer_manifest(tmp_path, raw_manifest("d", [("d/x", len(DATA), ROOT)]), len(DATA))
        )
    assert files_under(elsewhere) == {}
    assert final_files(out) == {"d": b"<symlink>"}


# -- sizes and counts -------------------------------------------------------------------


def test_ten_million_entries_are_refused_from_the_counts(tmp_path: Path) -> None:
    """The counts say 10M files: refused from the 17-byte head, before any entry
    is parsed (no 10M objects), however many bytes follow."""
    head = raw_manifest("d", file_count=10_000_000)
    with pytest.raises(RemoteProtocolError, match=f"more than {MAX_MANIFEST_ENTRIES} entries"):
        asyncio.run(_offer_manifest(tmp_path, head + bytes(LEAF_SIZE), 0))
    assert snapshot(tmp_path) == {}


async def _lazy_manifest(tmp_path: Path, blob: LazyBlob, counter: dict[str, int]) -> None:
    async with hostile_sender() as sender:
        sender.answers[blob.root] = lazy_answer(blob, counter)
        await fetch(sender.ticket(blob.root, 0), tmp_path / "out", timeout_s=30)


def test_ten_million_entries_at_full_size_are_refused_by_the_size_limit(tmp_path: Path) -> None:
    """10M entries of 53 bytes (530 MB): over the 256 MiB manifest limit, so the
    receiver stops taking it at that limit, never holding more."""
    head = raw_manifest("d", file_count=10_000_000)
    size = -(-(len(head) + 10_000_000 * 53) // LEAF_SIZE) * LEAF_SIZE
    counter: dict[str, int] = {}
    with pytest.raises(RemoteProtocolError, match=TOO_LARGE):
        asyncio.run(_lazy_manifest(tmp_path, LazyBlob(head, size), counter))
    assert counter["bytes"] < size
    assert snapshot(tmp_path) == {}


def test_petabyte_manifest_is_refused_from_its_header(tmp_path: Path) -> None:
    """The manifest blob's header (proven by the ticket's root) says 1 PB: the
    receiver knows at byte 40 that it will refuse it."""
    counter: dict[str, int] = {}
    with pytest.raises(RemoteProtocolError, match=TOO_LARGE):
        asyncio.run(
            _lazy_manifest(tmp_path, LazyBlob(raw_manifest("d", file_count=1), PB), counter)
        )
    assert snapshot(tmp_path) == {}
    # The sender could push at most the stream's windows before the receiver stopped it.
    assert counter["bytes"] < 64 * 1024 * 1024


def test_decoder_limit_refuses_a_large_blob_at_its_header() -> None:
    """The sans-IO half of the fix above: ``max_size`` refuses at byte 40."""
    blob = LazyBlob(raw_manifest("d", file_count=1), PB)
    decoder = RangeDecoder(blob.root, ALL, max_size=MAX_MANIFEST_BYTES)
    decoder.receive_data(encode_header(blob.size, blob.top))
    with pytest.raises(RemoteProtocolError, match="more than the 268,435,456 accepted"):
        decoder.next_event()
    at_limit = LazyBlob(b"", MAX_MANIFEST_BYTES)
    decoder = RangeDecoder(at_limit.root, ALL, max_size=MAX_MANIFEST_BYTES)
    decoder.receive_data(encode_header(at_limit.size, at_limit.top))
    assert decoder.next_event() == SizeKnown(MAX_MANIFEST_BYTES)


def test_petabyte_file_is_refused_by_the_free_space_check(tmp_path: Path) -> None:
    manifest = manifest_blob(Manifest.single_file("huge.bin", PB, ROOT))
    with pytest.raises(StorageError, match="not enough free space") as caught:
        asyncio.run(_offer_manifest(tmp_path, encode(manifest), PB))
    assert caught.value.exit_code == EXIT_UNEXPECTED
    assert files_under(tmp_path / "out") == {}


def test_one_blob_listed_many_times_is_counted_per_copy(tmp_path: Path) -> None:
    """Four paths share one blob of half the free space: the blob is fetched
    once but written four times, so it cannot fit. (The sender then answers
    NOT_FOUND, so a check that lets it through fails with exit 4, and nothing
    is ever written.)"""
    half = shutil.disk_usage(tmp_path).free // 2
    files = [(f"d/copy{i}", half, ROOT) for i in range(4)]
    manifest = raw_manifest("d", files)
    with pytest.raises(StorageError, match="not enough free space"):
        asyncio.run(_offer_manifest(tmp_path, manifest, 4 * half, file_blob=Blob.of(b"")))
    assert final_files(tmp_path / "out") == {}


def test_manifest_total_must_match_the_ticket(tmp_path: Path) -> None:
    """The ticket promised 6 bytes; the manifest lists 1 PB."""
    manifest = manifest_blob(Manifest.single_file("huge.bin", PB, ROOT))
    with pytest.raises(IntegrityError, match="total size does not match"):
        asyncio.run(_offer_manifest(tmp_path, encode(manifest), len(DATA)))
    assert snapshot(tmp_path) == {}


def encode(blob: Blob) -> bytes:
    return blob.data
