"""Manifest codec: round trips, strict validation, hostile bytes."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcp.blobs.collection import (
    MANIFEST_MAGIC,
    MAX_MANIFEST_ENTRIES,
    Entry,
    Manifest,
    decode_manifest,
    encode_manifest,
)
from p2pcp.core.errors import (
    LocalProtocolError,
    P2pcpError,
    RemoteProtocolError,
    UnsafePathError,
)

ROOT = bytes(range(32))


def folder() -> Manifest:
    return Manifest.folder(
        "photos",
        [
            Entry("photos/b.jpg", 20, ROOT, False),
            Entry("photos/a/run.sh", 5, ROOT, True),
            Entry("photos/é.txt", 0, bytes(32)),
        ],
        ["photos/empty", "photos/a/empty"],
    )


def raw_manifest(
    name: bytes, files: list[tuple[bytes, int, int]], dirs: list[bytes], version: int = 1
) -> bytes:
    out = MANIFEST_MAGIC + bytes([version, 0]) + struct.pack("<H", len(name)) + name
    out += struct.pack("<II", len(files), len(dirs))
    for path, size, flags in files:
        out += struct.pack("<H", len(path)) + path + struct.pack("<Q32sB", size, ROOT, flags)
    for path in dirs:
        out += struct.pack("<H", len(path)) + path
    return out


def test_single_file_round_trip() -> None:
    manifest = Manifest.single_file("notes.txt", 1234, ROOT, is_executable=True)
    assert manifest.is_single_file and not manifest.is_dir
    assert manifest.total_size == 1234
    assert decode_manifest(encode_manifest(manifest)) == manifest


def test_folder_round_trip() -> None:
    manifest = folder()
    assert [entry.path for entry in manifest.files] == [
        "photos/a/run.sh",
        "photos/b.jpg",
        "photos/é.txt",
    ]
    assert manifest.is_dir and not manifest.is_single_file
    assert manifest.total_size == 25
    decoded = decode_manifest(encode_manifest(manifest))
    assert decoded == manifest
    assert decoded.files[0].is_executable


def test_empty_folder_and_one_file_folder() -> None:
    empty = Manifest.folder("void", [], ["void"])
    assert decode_manifest(encode_manifest(empty)) == empty
    assert empty.is_dir and empty.total_size == 0
    one = Manifest.folder("d", [Entry("d/f", 1, ROOT)], [])
    assert decode_manifest(encode_manifest(one)).is_dir


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", RemoteProtocolError),
        (b"NOTAMANI\x01\x00", RemoteProtocolError),
        (raw_manifest(b"d", [(b"d/a", 1, 0)], [], version=2), RemoteProtocolError),
        (raw_manifest(b"d", [(b"d/a", 1, 0)], []) + b"\x00", RemoteProtocolError),
        (raw_manifest(b"d", [(b"d/b", 1, 0), (b"d/a", 1, 0)], []), RemoteProtocolError),
        (raw_manifest(b"d", [(b"d/a", 1, 0), (b"d/a", 1, 0)], []), RemoteProtocolError),
        (raw_manifest(b"d", [(b"d/a", 1, 2)], []), RemoteProtocolError),
        (raw_manifest(b"d", [], []), RemoteProtocolError),
        (raw_manifest(b"d", [], [b"d/y", b"d/x"]), RemoteProtocolError),
        (raw_manifest(b"d", [(b"e/a", 1, 0)], []), UnsafePathError),
        (raw_manifest(b"d", [(b"d", 1, 0)], [b"d/x"]), UnsafePathError),
        (raw_manifest(b"d", [(b"d", 1, 0), (b"d/x", 1, 0)], []), UnsafePathError),
        (raw_manifest(b"d", [], [b"e"]), UnsafePathError),
        (raw_manifest(b"d", [(b"d/../x", 1, 0)], []), UnsafePathError),
        (raw_manifest(b"..", [(b"../x", 1, 0)], []), UnsafePathError),
        (raw_manifest(b"d", [(b"d/\xff", 1, 0)], []), UnsafePathError),
        (raw_manifest(b"d", [(b"d/A", 1, 0), (b"d/a", 1, 0)], []), UnsafePathError),
        (raw_manifest(b"d", [(b"d/a", 1, 0)], [b"d/a"]), UnsafePathError),
        (raw_manifest(b"d", [(b"d/a", 1, 0)], [b"d/a/b"]), UnsafePathError),
        (raw_manifest(b"d/e", [(b"d/e/a", 1, 0)], []), UnsafePathError),
    ],
)
def test_decode_refuses(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_manifest(data)


def test_entry_count_limit_is_checked_before_reading() -> None:
    data = MANIFEST_MAGIC + b"\x01\x00" + b"\x01\x00d" + struct.pack("<II", MAX_MANIFEST_ENTRIES, 1)
    with pytest.raises(RemoteProtocolError, match="entries"):
        decode_manifest(data)
    with pytest.raises(RemoteProtocolError, match="truncated"):
        decode_manifest(data[:-8] + struct.pack("<II", 1000, 0))


def test_every_truncation_is_refused() -> None:
    data = encode_manifest(folder())
    for cut in range(len(data)):
        with pytest.raises(RemoteProtocolError):
            decode_manifest(data[:cut])


def test_encode_refuses_what_decode_would() -> None:
    unsorted = Manifest((Entry("d/b", 1, ROOT), Entry("d/a", 1, ROOT)), (), "d")
    with pytest.raises(LocalProtocolError):
        encode_manifest(unsorted)
    with pytest.raises(UnsafePathError):
        encode_manifest(Manifest.folder("d", [Entry("d/x\\y", 1, ROOT)], []))
    with pytest.raises(LocalProtocolError):
        encode_manifest(Manifest.folder("d", [Entry("d/x", -1, ROOT)], []))
    with pytest.raises(LocalProtocolError):
        encode_manifest(Manifest.folder("d", [Entry("d/x", 1, b"short")], []))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_hostile_bytes_raise_only_project_errors(data: bytes) -> None:
    with contextlib.suppress(P2pcpError):
        decode_manifest(data)


@settings(max_examples=300, deadline=None)
@given(position=st.integers(0, 10_000), value=st.integers(0, 255), cut=st.integers(0, 3))
def test_mutated_manifests_raise_only_project_errors(position: int, value: int, cut: int) -> None:
    data = bytearray(encode_manifest(folder()))
    data[position % len(data)] = value
    try:
        manifest = decode_manifest(bytes(data[: len(data) - cut]))
    except P2pcpError:
        return
    assert decode_manifest(encode_manifest(manifest)) == manifest


def test_several_items() -> None:
    manifest = Manifest.folder(
        "2 items",
        [Entry("photos/b", 1, ROOT), Entry("notes.txt", 2, ROOT)],
        ["photos/empty"],
        has_several_items=True,
    )
    assert manifest.is_dir and not manifest.is_single_file
    decoded = decode_manifest(encode_manifest(manifest))
    assert decoded == manifest and decoded.has_several_items
    one = Manifest.folder("x", [Entry("x", 1, ROOT)], [], has_several_items=True)
    assert decode_manifest(encode_manifest(one)).is_dir
    for paths in (["a", "A"], ["a", "a/b"]):
        clash = Manifest.folder("2", [Entry(p, 1, ROOT) for p in paths], [], has_several_items=True)
        with pytest.raises(UnsafePathError):
            encode_manifest(clash)


def test_folder_order_is_utf8_byte_order() -> None:
    manifest = Manifest.folder("d", [Entry("d/a/x", 1, ROOT), Entry("d/a b", 1, ROOT)], [])
    assert [entry.path for entry in manifest.files] == ["d/a b", "d/a/x"]
    assert decode_manifest(encode_manifest(manifest)) == manifest
