"""Manifest codec: round trips (version 2, and version 1 still read),
strict validation, limits, hostile bytes."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcp.blobs.collection import (
    MANIFEST_MAGIC,
    MANIFEST_VERSION,
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
            Entry("photos/b.jpg", 20, ROOT, 0o600, 1_700_000_000_123_456_789),
            Entry("photos/a/run.sh", 5, ROOT, 0o750, -1),
            Entry("photos/é.txt", 0, bytes(32)),
        ],
        ["photos/empty", "photos/a/empty"],
    )


# A file as raw_manifest writes it: path bytes, size, then for version 1
# the flags byte, for version 2 the mode (mtime_ns is 0).
RawFile = tuple[bytes, int, int]


def raw_manifest(
    name: bytes, files: list[RawFile], dirs: list[bytes], version: int = MANIFEST_VERSION
) -> bytes:
    """Manifest bytes exactly as given: no sorting, no checks."""
    out = MANIFEST_MAGIC + bytes([version, 0]) + struct.pack("<H", len(name)) + name
    out += struct.pack("<II", len(files), len(dirs))
    for path, size, flags_or_mode in files:
        out += struct.pack("<H", len(path)) + path
        if version == 1:
            out += struct.pack("<Q32sB", size, ROOT, flags_or_mode)
        else:
            out += struct.pack("<Q32sHq", size, ROOT, flags_or_mode, 0)
    for path in dirs:
        out += struct.pack("<H", len(path)) + path
    return out


def test_single_file_round_trip() -> None:
    manifest = Manifest.single_file("notes.txt", 1234, ROOT, 0o755, 5)
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
    run, jpg, txt = decoded.files
    assert run.is_executable and run.mode == 0o750 and run.mtime_ns == -1
    assert not jpg.is_executable and jpg.mode == 0o600 and jpg.mtime_ns == 1_700_000_000_123_456_789
    assert txt.mode == 0o644 and txt.mtime_ns is None


def test_encode_writes_version_2_with_mode_and_mtime() -> None:
    manifest = Manifest.single_file("a", 1, ROOT, 0o640, 7)
    data = encode_manifest(manifest)
    assert data[8] == 2
    assert data.endswith(struct.pack("<Q32sHq", 1, ROOT, 0o640, 7))
    unknown = encode_manifest(Manifest.single_file("a", 1, ROOT))
    assert unknown.endswith(struct.pack("<Hq", 0o644, -(2**63)))


def test_version_1_still_decodes() -> None:
    data = raw_manifest(b"d", [(b"d/a", 1, 0), (b"d/run", 2, 1)], [b"d/e"], version=1)
    manifest = decode_manifest(data)
    assert manifest.files == (Entry("d/a", 1, ROOT, 0o644, None), Entry("d/run", 2, ROOT, 0o755))
    assert manifest.empty_dirs == ("d/e",)
    assert [entry.is_executable for entry in manifest.files] == [False, True]


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
        (raw_manifest(b"d", [(b"d/a", 1, 0)], [], version=3), RemoteProtocolError),
        (raw_manifest(b"d", [(b"d/a", 1, 0)], [], version=0), RemoteProtocolError),
        (raw_manifest(b"d", [(b"d/a", 1, 0)], []) + b"\x00", RemoteProtocolError),
        (raw_manifest(b"d", [(b"d/b", 1, 0), (b"d/a", 1, 0)], []), RemoteProtocolError),
        (raw_manifest(b"d", [(b"d/a", 1, 0), (b"d/a", 1, 0)], []), RemoteProtocolError),
        (raw_manifest(b"d", [(b"d/a", 1, 2)], [], version=1), RemoteProtocolError),
        (raw_manifest(b"d", [(b"d/a", 1, 0o1000)], []), RemoteProtocolError),
        (raw_manifest(b"d", [(b"d/a", 1, 0o4755)], []), RemoteProtocolError),
        (raw_manifest(b"d", [(b"d/a", 1, 0xFFFF)], []), RemoteProtocolError),
        (raw_manifest(b"d", [(b"d/b", 1, 0), (b"d/a", 1, 0)], [], version=1), RemoteProtocolError),
        (raw_manifest(b"d", [], []), RemoteProtocolError),
        (raw_manifest(b"d", [], [b"d/y", b"d/x"]), RemoteProtocolError),
        (raw_manifest(b"d", [(b"e/a", 1, 0)], []), UnsafePathError),
        (raw_manifest(b"d", [(b"d", 1, 0)], [b"d/x"]), UnsafePathError),
        (raw_manifest(b"d", [(b"d", 1, 0), (b"d/x", 1, 0)], []), UnsafePathError),
        (raw_manifest(b"d", [], [b"e"]), UnsafePathError),
        (raw_manifest(b"d", [(b"d/../x", 1, 0)], []), UnsafePathError),
        (raw_manifest(b"..", [(b"../x", 1, 0)], []), UnsafePathError),
        (raw_manifest(b"d", [(b"d/a\x00", 1, 0)], []), UnsafePathError),
        (raw_manifest(b"d", [(b"d/\xff", 1, 0), (b"d/\xc3\xa9", 1, 0)], []), RemoteProtocolError),
        (raw_manifest(b"d", [(b"d/a", 1, 0)], [b"d/a"]), UnsafePathError),
        (raw_manifest(b"d", [(b"d/a", 1, 0)], [b"d/a/b"]), UnsafePathError),
        (raw_manifest(b"d/e", [(b"d/e/a", 1, 0)], []), UnsafePathError),
    ],
)
def test_decode_refuses(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_manifest(data)


@pytest.mark.parametrize("version", [1, 2])
def test_entry_count_limit_is_checked_before_reading(version: int) -> None:
    head = MANIFEST_MAGIC + bytes([version, 0]) + b"\x01\x00d"
    with pytest.raises(RemoteProtocolError, match="entries"):
        decode_manifest(head + struct.pack("<II", MAX_MANIFEST_ENTRIES, 1))
    with pytest.raises(RemoteProtocolError, match="truncated"):
        decode_manifest(head + struct.pack("<II", 1000, 0))
    # One entry's worth of bytes short of a file count: refused before any path is read.
    one = raw_manifest(b"d", [(b"d/a", 1, 0)], [], version=version)
    with pytest.raises(RemoteProtocolError, match="truncated"):
        decode_manifest(one[:-1])


def test_path_and_name_length_limits() -> None:
    long_path = b"d/" + b"/".join([b"x" * 200] * 20) + b"/" + b"y" * 74
    assert len(long_path) == 4096
    decode_manifest(raw_manifest(b"d", [(long_path, 1, 0)], []))
    with pytest.raises(RemoteProtocolError, match="longer than 4096"):
        decode_manifest(raw_manifest(b"d", [(long_path + b"z", 1, 0)], []))
    decode_manifest(raw_manifest(b"n" * 255, [(b"n" * 255, 1, 0)], []))
    with pytest.raises(RemoteProtocolError, match="longer than 255"):
        decode_manifest(raw_manifest(b"n" * 256, [(b"n" * 256, 1, 0)], []))


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
        encode_manifest(Manifest.folder("d", [Entry("d/x/../y", 1, ROOT)], []))
    with pytest.raises(UnsafePathError):
        encode_manifest(Manifest.folder("d", [Entry("d/\ud800", 1, ROOT)], []))
    with pytest.raises(LocalProtocolError):
        encode_manifest(Manifest.folder("d", [Entry("d/x", 1, ROOT, 0o4755)], []))
    with pytest.raises(LocalProtocolError):
        encode_manifest(Manifest.folder("d", [Entry("d/x", 1, ROOT, 0o644, -(2**63))], []))
    with pytest.raises(LocalProtocolError):
        encode_manifest(Manifest.folder("d", [Entry("d/x", 1, ROOT, 0o644, 2**63)], []))
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
@given(data=st.binary(max_size=300), version=st.sampled_from([1, 2]))
def test_hostile_bytes_after_a_valid_head_raise_only_project_errors(
    data: bytes, version: int
) -> None:
    with contextlib.suppress(P2pcpError):
        decode_manifest(MANIFEST_MAGIC + bytes([version, data[0] % 2 if data else 0]) + data[1:])


@settings(max_examples=300, deadline=None)
@given(
    position=st.integers(0, 10_000),
    value=st.integers(0, 255),
    cut=st.integers(0, 3),
    version=st.sampled_from([1, 2]),
)
def test_mutated_manifests_raise_only_project_errors(
    position: int, value: int, cut: int, version: int
) -> None:
    files: list[RawFile] = [(b"d/a/run.sh", 5, 1), (b"d/b.jpg", 20, 0), (b"d/\xc3\xa9", 0, 0)]
    if version == 2:
        files = [(path, size, 0o755 if flags else 0o600) for path, size, flags in files]
    data = bytearray(raw_manifest(b"d", files, [b"d/a/empty", b"d/empty"], version=version))
    assert decode_manifest(bytes(data)).files[0].path == "d/a/run.sh"
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
    clash = Manifest.folder(
        "2", [Entry(p, 1, ROOT) for p in ["a", "a/b"]], [], has_several_items=True
    )
    with pytest.raises(UnsafePathError):
        encode_manifest(clash)
    twins = Manifest.folder(
        "2", [Entry(p, 1, ROOT) for p in ["a", "A"]], [], has_several_items=True
    )
    assert decode_manifest(encode_manifest(twins)) == twins


def test_folder_order_is_utf8_byte_order() -> None:
    manifest = Manifest.folder("d", [Entry("d/a/x", 1, ROOT), Entry("d/a b", 1, ROOT)], [])
    assert [entry.path for entry in manifest.files] == ["d/a b", "d/a/x"]
    assert decode_manifest(encode_manifest(manifest)) == manifest


def test_every_linux_name_round_trips_as_its_bytes() -> None:
    raw_names = [
        b"README",
        b"readme",
        b"c:notes.txt",
        b"back\\slash",
        b"new\nline",
        b"esc\x1b[31m",
        "r\u00e9sum\u00e9".encode(),
        "re\u0301sume\u0301".encode(),
        b"latin1-\xe9t\xe9",
        b"\xff\xfe",
    ]
    names = [name.decode("utf-8", "surrogateescape") for name in raw_names]
    manifest = Manifest.folder(
        "d", [Entry(f"d/{name}", 1, ROOT) for name in names], [f"d/{names[-1]}-empty"]
    )
    data = encode_manifest(manifest)
    for raw in raw_names:
        assert b"d/" + raw in data
    decoded = decode_manifest(data)
    assert decoded == manifest
    # Wire order is the bytes' order (0xff sorts last), not the strings'.
    assert [entry.path.encode("utf-8", "surrogateescape") for entry in decoded.files] == sorted(
        b"d/" + raw for raw in raw_names
    )
