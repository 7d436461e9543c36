"""Manifest links section (flag bit 2): round trips, the rules a receiver
enforces, and a manifest without links encoded byte for byte as before."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcp.blobs.collection import (
    MANIFEST_MAGIC,
    MAX_MANIFEST_ENTRIES,
    Entry,
    Link,
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

# Encoded by the encoder before links existed (commit 666b790), for the
# manifests of test_manifest_without_links_is_byte_identical.
GOLDEN_FOLDER = bytes.fromhex(
    "50325043504d414e020001006402000000010000000300642f61030000000000000000010203"
    "0405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fa00107002a36fe9c9717"
    "0500642f782fff0000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000a40100000000000000800300642f65"
)
GOLDEN_SEVERAL = bytes.fromhex(
    "50325043504d414e0201070032206974656d7301000000010000000100610100000000000000"
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fa40100000000"
    "000000800100" + "62"
)


def test_manifest_without_links_is_byte_identical() -> None:
    folder = Manifest.folder(
        "d",
        [
            Entry("d/a", 3, ROOT, 0o640, 1_700_000_000_000_000_007),
            Entry("d/x/\udcff", 0, bytes(32)),
        ],
        ["d/e"],
    )
    assert encode_manifest(folder) == GOLDEN_FOLDER
    assert decode_manifest(GOLDEN_FOLDER) == folder and folder.links == ()
    several = Manifest.folder("2 items", [Entry("a", 1, ROOT)], ["b"], has_several_items=True)
    assert encode_manifest(several) == GOLDEN_SEVERAL
    assert GOLDEN_FOLDER[9] & 0x04 == 0


def with_links() -> Manifest:
    return Manifest.folder(
        "d",
        [Entry("d/a", 3, ROOT)],
        ["d/empty"],
        links=[
            Link("d/z", "a"),
            Link("d/sub/up", "../a"),
            Link("d/abs", "/etc/passwd"),
            Link("d/\udcfe", "\udcff-target"),
        ],
    )


def test_links_round_trip_in_wire_order() -> None:
    manifest = with_links()
    assert [link.path for link in manifest.links] == ["d/abs", "d/sub/up", "d/z", "d/\udcfe"]
    data = encode_manifest(manifest)
    assert data[9] == 0x04  # flag bit 2, nothing else
    decoded = decode_manifest(data)
    assert decoded == manifest
    assert decoded.is_dir and not decoded.is_single_file
    # The section: count, then path and target, each u16 length || bytes.
    tail = struct.pack("<I", 4) + struct.pack("<H", 5) + b"d/abs" + struct.pack("<H", 11)
    assert tail + b"/etc/passwd" in data
    assert data.endswith(struct.pack("<H", 3) + b"d/\xfe" + struct.pack("<H", 8) + b"\xff-target")


def test_a_folder_of_only_links_and_several_items() -> None:
    only = Manifest.folder("d", [], [], links=[Link("d/l", "x")])
    assert decode_manifest(encode_manifest(only)) == only
    several = Manifest.folder(
        "2 items",
        [Entry("f.txt", 1, ROOT)],
        [],
        has_several_items=True,
        links=[Link("photos/l", "../f.txt")],
    )
    decoded = decode_manifest(encode_manifest(several))
    assert decoded == several and decoded.has_several_items


@pytest.mark.parametrize(
    ("manifest", "error"),
    [
        # A link where a file or a folder is, or a path inside a link.
        (
            Manifest.folder("d", [Entry("d/l", 1, ROOT)], [], links=[Link("d/l", "x")]),
            UnsafePathError,
        ),
        (Manifest.folder("d", [], ["d/l"], links=[Link("d/l", "x")]), UnsafePathError),
        (
            Manifest.folder("d", [Entry("d/l/f", 1, ROOT)], [], links=[Link("d/l", "x")]),
            UnsafePathError,
        ),
        (
            Manifest.folder("d", [], [], links=[Link("d/l", "x"), Link("d/l/m", "x")]),
            UnsafePathError,
        ),
        (Manifest.folder("d", [], ["d"], links=[Link("d/l", "x")]), UnsafePathError),
        # Path rules.
        (Manifest.folder("d", [], [], links=[Link("d/../l", "x")]), UnsafePathError),
        (Manifest.folder("d", [], [], links=[Link("e/l", "x")]), UnsafePathError),
        (Manifest.folder("d", [], [], links=[Link("d", "x")]), UnsafePathError),
        (
            Manifest.folder("2", [], [], has_several_items=True, links=[Link("l", "x")]),
            UnsafePathError,
        ),
        # Targets.
        (Manifest.folder("d", [], [], links=[Link("d/l", "")]), LocalProtocolError),
        (Manifest.folder("d", [], [], links=[Link("d/l", "a\x00b")]), LocalProtocolError),
        (Manifest.folder("d", [], [], links=[Link("d/l", "x" * 4097)]), LocalProtocolError),
        (Manifest.folder("d", [], [], links=[Link("d/l", "\ud800")]), LocalProtocolError),
        # Order and repeats.
        (
            Manifest(files=(), empty_dirs=(), name="d", links=(Link("d/b", "x"), Link("d/a", "x"))),
            LocalProtocolError,
        ),
        (
            Manifest(files=(), empty_dirs=(), name="d", links=(Link("d/a", "x"), Link("d/a", "y"))),
            LocalProtocolError,
        ),
        # A text message has no links.
        (
            Manifest(
                (Entry("text", 1, ROOT),), (), "text", is_text=True, links=(Link("text/l", "x"),)
            ),
            UnsafePathError,
        ),
    ],
)
def test_encode_refuses_bad_links(manifest: Manifest, error: type[Exception]) -> None:
    with pytest.raises(error):
        encode_manifest(manifest)


def test_longest_target_is_accepted() -> None:
    manifest = Manifest.folder("d", [], [], links=[Link("d/l", "x" * 4096)])
    assert decode_manifest(encode_manifest(manifest)) == manifest


def raw_links(
    links: list[tuple[bytes, bytes]], count: int | None = None, flags: int = 0x04
) -> bytes:
    """A folder ``d`` with one file ``d/a`` and the links section exactly as given."""
    out = MANIFEST_MAGIC + bytes([2, flags]) + b"\x01\x00d" + struct.pack("<II", 1, 0)
    out += struct.pack("<H", 3) + b"d/a" + struct.pack("<Q32sHq", 1, ROOT, 0o644, 0)
    if flags & 0x04:
        out += struct.pack("<I", len(links) if count is None else count)
    for path, target in links:
        out += struct.pack("<H", len(path)) + path + struct.pack("<H", len(target)) + target
    return out


def test_raw_links_decode() -> None:
    manifest = decode_manifest(raw_links([(b"d/l", b"a")]))
    assert manifest.links == (Link("d/l", "a"),)


@pytest.mark.parametrize(
    "data",
    [
        raw_links([], count=0),  # the flag with no links: one encoding only
        raw_links([(b"d/l", b"a")], count=2),  # truncated
        raw_links([(b"d/l", b"a")])[:-1],
        raw_links([(b"d/l", b"a")]) + b"\x00",
        raw_links([(b"d/l", b"")]),
        raw_links([(b"d/l", b"a\x00")]),
        raw_links([(b"d/l", b"x" * 4097)]),
        raw_links([(b"d/m", b"a"), (b"d/l", b"a")]),
        raw_links([(b"d/a", b"x")]),  # the file's path
        raw_links([(b"d/a/b", b"x")]),  # inside the file
        raw_links([(b"e/l", b"x")]),
        raw_links([(b"d/l", b"a")], count=MAX_MANIFEST_ENTRIES),
        raw_links([(b"d/l", b"a")])[:9]
        + b"\x00"
        + raw_links([(b"d/l", b"a")])[10:],  # no flag: bytes after
        # Version 1 has no links section.
        raw_links([(b"d/l", b"a")])[:8] + b"\x01" + raw_links([(b"d/l", b"a")])[9:],
    ],
)
def test_decode_refuses_bad_links(data: bytes) -> None:
    with pytest.raises((RemoteProtocolError, UnsafePathError)):
        decode_manifest(data)


@settings(max_examples=300, deadline=None)
@given(position=st.integers(0, 10_000), value=st.integers(0, 255), cut=st.integers(0, 3))
def test_mutated_manifests_with_links_raise_only_project_errors(
    position: int, value: int, cut: int
) -> None:
    data = bytearray(encode_manifest(with_links()))
    data[position % len(data)] = value
    try:
        manifest = decode_manifest(bytes(data[: len(data) - cut]))
    except P2pcpError:
        return
    assert decode_manifest(encode_manifest(manifest)) == manifest


def test_every_truncation_with_links_is_refused() -> None:
    data = encode_manifest(with_links())
    for cut in range(len(data)):
        with pytest.raises(RemoteProtocolError):
            decode_manifest(data[:cut])
