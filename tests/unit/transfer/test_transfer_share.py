"""The stable share's pieces that need no network: the SHARE ticket kind,
the GET_SNAPSHOT codec, the secret kept per share, the share's scans."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pcp.core.errors import RemoteProtocolError, StorageError
from p2pcp.core.ticket import Ticket, TicketKind, decode_ticket, encode_ticket
from p2pcp.transfer import events, wire
from p2pcp.transfer.share import ShareOptions, ShareSource, load_share_secret, share_id
from p2pcp.transfer.snapshot import partial_key

SHARE = Ticket(
    bytes(range(32)), "http://relay.test:3340", (), os.urandom(32), 0, kind=TicketKind.SHARE
)


def test_a_share_ticket_is_version_2_kind_3_and_round_trips() -> None:
    text = encode_ticket(SHARE)
    payload = text[len("p2pcp") :].upper()
    record = base64.b32decode(payload + "=" * (-len(payload) % 8))[:-4]
    assert record[:2] == bytes([2, 3])
    decoded = decode_ticket(text)
    assert decoded == SHARE
    assert str(decoded.kind) == "share"


def test_a_share_ticket_depends_only_on_node_relay_addresses_and_secret() -> None:
    again = dataclasses.replace(SHARE)
    assert encode_ticket(again) == encode_ticket(SHARE)
    rotated = dataclasses.replace(SHARE, root_hash=os.urandom(32))
    assert encode_ticket(rotated) != encode_ticket(SHARE)


@given(st.binary(min_size=32, max_size=32))
def test_snapshot_request_round_trip(secret: bytes) -> None:
    request = wire.SnapshotRequest(secret)
    data = wire.encode_request(request)
    assert data[0] == 0x07 and len(data) == 33
    assert wire.decode_request(data) == request
    assert secret.hex() not in repr(request)


@pytest.mark.parametrize("length", [0, 1, 31, 33, 64])
def test_snapshot_request_of_another_length_is_refused(length: int) -> None:
    with pytest.raises(RemoteProtocolError):
        wire.decode_request(bytes([0x07]) + bytes(length))
    with pytest.raises(RemoteProtocolError):
        wire.encode_request(wire.SnapshotRequest(bytes(length)))


@given(
    st.binary(min_size=32, max_size=32),
    st.integers(0, 2**63 - 1),
    st.integers(0, 2**32 - 1),
)
def test_snapshot_answer_round_trip(root: bytes, total: int, count: int) -> None:
    snapshot = wire.Snapshot(root, total, count)
    data = wire.encode_snapshot(snapshot)
    assert len(data) == wire.SNAPSHOT_ANSWER_BYTES == 44
    assert wire.decode_snapshot(data) == snapshot


@given(st.binary(max_size=100))
def test_hostile_snapshot_answers_raise_only_remote_protocol_errors(data: bytes) -> None:
    try:
        snapshot = wire.decode_snapshot(data)
    except RemoteProtocolError:
        return
    assert wire.encode_snapshot(snapshot) == data


def test_a_snapshot_answer_with_a_size_over_2_63_is_refused() -> None:
    with pytest.raises(RemoteProtocolError):
        wire.decode_snapshot(bytes(32) + (2**63).to_bytes(8, "big") + bytes(4))


def test_the_partial_folder_key_hides_the_secret() -> None:
    secret = os.urandom(32)
    key = partial_key(secret)
    assert len(key) == 32 and key != secret
    assert partial_key(secret) == key


# -- the secret ----------------------------------------------------------------


def test_the_secret_is_kept_per_share_private_and_rotates(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first, is_new = load_share_secret("a" * 32, rotate=False, home=home)
    assert is_new and len(first) == 32
    again, is_new = load_share_secret("a" * 32, rotate=False, home=home)
    assert again == first and not is_new
    other, _ = load_share_secret("b" * 32, rotate=False, home=home)
    assert other != first
    folder = home / "shares"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    rotated, is_new = load_share_secret("a" * 32, rotate=True, home=home)
    assert is_new and rotated != first
    assert load_share_secret("a" * 32, rotate=False, home=home) == (rotated, False)
    assert sorted(p.name for p in folder.iterdir()) == ["a" * 32 + ".secret", "b" * 32 + ".secret"]


def test_a_damaged_secret_file_is_an_error_that_says_rotate(tmp_path: Path) -> None:
    load_share_secret("c" * 32, rotate=False, home=tmp_path)
    (tmp_path / "shares" / ("c" * 32 + ".secret")).write_bytes(b"junk")
    with pytest.raises(StorageError, match="--rotate"):
        load_share_secret("c" * 32, rotate=False, home=tmp_path)


def test_the_share_id_follows_the_canonical_paths_and_the_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "docs").mkdir()
    monkeypatch.chdir(tmp_path)
    same = share_id((Path("photos"),), ())
    assert share_id((tmp_path / "photos",), ()) == same
    assert share_id((Path("./photos/"),), ()) == same
    assert share_id((Path("docs"),), ()) != same
    assert share_id((Path("photos"), Path("docs")), ()) != same
    assert share_id((Path("photos"),), ("--exclude=*.tmp",)) != same


# -- snapshots -----------------------------------------------------------------


def test_an_unchanged_tree_gives_the_same_root_and_a_change_another(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.txt").write_bytes(b"one")
    seen: list[object] = []
    source = ShareSource(ShareOptions(paths=(folder,)), os.urandom(32), seen.append)

    async def main() -> tuple[bytes, bytes, bytes]:
        first = await source.snapshot()
        second = await source.snapshot()
        (folder / "b.txt").write_bytes(b"two")
        third = await source.snapshot()
        return first.root, second.root, third.root

    first, second, third = asyncio.run(main())
    assert first == second != third
    taken = [event for event in seen if isinstance(event, events.SnapshotTaken)]
    assert [event.root for event in taken] == [first.hex(), second.hex(), third.hex()]
    assert taken[-1].file_count == 2


def test_requests_that_arrive_during_a_scan_share_the_next_one(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.txt").write_bytes(b"one")
    seen: list[object] = []
    source = ShareSource(ShareOptions(paths=(folder,)), os.urandom(32), seen.append)

    async def main() -> list[bytes]:
        first = asyncio.ensure_future(source.snapshot())
        await asyncio.sleep(0)  # the first scan is running
        later = [asyncio.ensure_future(source.snapshot()) for _ in range(5)]
        results = await asyncio.gather(first, *later)
        return [collection.root for collection in results]

    roots = asyncio.run(main())
    assert len(set(roots)) == 1
    scans = [event for event in seen if isinstance(event, events.SnapshotTaken)]
    assert len(scans) == 2  # the first, then one for the five that came during it


def test_a_share_whose_folder_is_gone_reports_it_and_raises(tmp_path: Path) -> None:
    folder = tmp_path / "gone"
    seen: list[object] = []
    source = ShareSource(ShareOptions(paths=(folder,)), os.urandom(32), seen.append)
    with pytest.raises(Exception, match="no such file"):
        asyncio.run(source.snapshot())
    assert any(isinstance(event, events.SnapshotFailed) for event in seen)


def test_the_allow_list_and_the_secret(tmp_path: Path) -> None:
    from p2pcp.core.identity import SecretKey

    allowed, other = SecretKey.generate().public, SecretKey.generate().public
    secret = os.urandom(32)
    open_share = ShareSource(ShareOptions(paths=(tmp_path,)), secret, [].append)
    assert open_share.is_allowed(other) and open_share.is_allowed(None)
    closed = ShareSource(ShareOptions(paths=(tmp_path,), allow=(allowed,)), secret, [].append)
    assert closed.is_allowed(allowed)
    assert not closed.is_allowed(other) and not closed.is_allowed(None)
    assert closed.matches(secret) and not closed.matches(os.urandom(32))
    assert secret.hex() not in repr(closed)
