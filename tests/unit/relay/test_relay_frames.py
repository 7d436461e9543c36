"""Relay frame codec: byte-exact round trips; hostile bytes raise only RelayProtocolError."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pcp.core.errors import RemoteProtocolError
from p2pcp.relay import frames
from p2pcp.relay.frames import RelayProtocolError

ROOT = Path(__file__).resolve().parents[3]

ids = st.binary(min_size=32, max_size=32)
datagram = st.binary(min_size=1, max_size=3000)
batch = st.lists(datagram, min_size=1, max_size=frames.MAX_BATCH_DATAGRAMS)
ping_payloads = st.binary(min_size=8, max_size=8)
nameplates = st.integers(1, frames.MAX_NAMEPLATE)
bodies = st.binary(max_size=frames.MAX_MAILBOX_BODY_BYTES)

NODE = bytes(range(32))
SERVER = bytes(range(32, 64))
NONCE = bytes(range(64, 96))
SIGNATURE = bytes(range(96, 160))


@dataclass(frozen=True)
class Case:
    """A frame type's test material: a strategy for its values, and one frame
    with its bytes spelled out from docs/PROTOCOL.md's tables (the wire
    format, pinned)."""

    values: st.SearchStrategy[frames.Frame]
    example: frames.Frame
    wire: bytes


# Every registered frame type, once (test_every_frame_type_has_a_case).
CASES = {
    frames.Challenge: Case(
        st.builds(frames.Challenge, ids, ids, st.integers(0, 255)),
        frames.Challenge(version=1, server_id=SERVER, challenge=NONCE),
        b"\x01\x01" + SERVER + NONCE,
    ),
    frames.Login: Case(
        st.builds(frames.Login, ids, st.binary(min_size=64, max_size=64), st.integers(0, 255)),
        frames.Login(version=1, node_id=NODE, signature=SIGNATURE),
        b"\x02\x01" + NODE + SIGNATURE,
    ),
    frames.LoginOk: Case(st.just(frames.LoginOk()), frames.LoginOk(), b"\x03"),
    frames.SendPackets: Case(
        st.builds(frames.SendPackets, ids, batch),
        frames.SendPackets(destination=NODE, datagrams=[b"ab", b"cde"]),
        b"\x10" + NODE + b"\x00\x02" + b"\x00\x02\x00\x03" + b"abcde",
    ),
    frames.ReceivePackets: Case(
        st.builds(frames.ReceivePackets, ids, batch),
        frames.ReceivePackets(source=NODE, datagrams=[b"x"]),
        b"\x11" + NODE + b"\x00\x01\x00\x01x",
    ),
    frames.Ping: Case(
        st.builds(frames.Ping, ping_payloads), frames.Ping(payload=b"pingpong"), b"\x20pingpong"
    ),
    frames.Pong: Case(
        st.builds(frames.Pong, ping_payloads), frames.Pong(payload=b"pongping"), b"\x21pongping"
    ),
    frames.PeerGone: Case(
        st.builds(frames.PeerGone, ids, st.integers(0, 255)),
        frames.PeerGone(node_id=NODE, reason=1),
        b"\x30" + NODE + b"\x01",
    ),
    frames.Error: Case(
        st.builds(frames.Error, st.integers(0, 255), st.text(max_size=40)),
        frames.Error(code=9, reason="\u00e9 stop"),
        b"\x7f\x09\xc3\xa9 stop",
    ),
    # The form that asks for a nameplate; the empty form is pinned in
    # test_allocate_without_a_nameplate_is_the_type_byte_alone.
    frames.Allocate: Case(
        st.one_of(
            st.just(frames.Allocate()),
            st.builds(frames.Allocate, st.integers(1, frames.MAX_REQUESTED_NAMEPLATE)),
        ),
        frames.Allocate(nameplate=7),
        b"\x40\x00\x00\x00\x07",
    ),
    frames.Allocated: Case(
        st.builds(frames.Allocated, nameplates),
        frames.Allocated(nameplate=7),
        b"\x41\x00\x00\x00\x07",
    ),
    frames.Claim: Case(
        st.builds(frames.Claim, nameplates),
        frames.Claim(nameplate=0x01020304),
        b"\x42\x01\x02\x03\x04",
    ),
    frames.Claimed: Case(
        st.builds(frames.Claimed, nameplates),
        frames.Claimed(nameplate=7),
        b"\x43\x00\x00\x00\x07",
    ),
    frames.Add: Case(
        st.builds(frames.Add, nameplates, bodies),
        frames.Add(nameplate=7, body=b"pake"),
        b"\x44\x00\x00\x00\x07pake",
    ),
    frames.Message: Case(
        st.builds(frames.Message, nameplates, bodies),
        frames.Message(nameplate=7, body=b""),
        b"\x45\x00\x00\x00\x07",
    ),
    frames.Release: Case(
        st.builds(frames.Release, nameplates),
        frames.Release(nameplate=7),
        b"\x46\x00\x00\x00\x07",
    ),
    frames.Closed: Case(
        st.builds(frames.Closed, st.integers(0, frames.MAX_NAMEPLATE), st.integers(0, 255)),
        frames.Closed(nameplate=0, reason=7),
        b"\x47\x00\x00\x00\x00\x07",
    ),
}

frame_values = st.one_of(*(case.values for case in CASES.values()))


def test_every_frame_type_has_a_case() -> None:
    registered = set(frames.frame_types().values())
    assert set(CASES) == registered
    for frame_type, frame_class in frames.frame_types().items():
        assert frame_type == frame_class.TYPE
        assert CASES[frame_class].wire[0] == frame_type
        assert type(CASES[frame_class].example) is frame_class


def _documented_frames() -> dict[int, str]:
    """Type byte -> name, from the frames table of docs/PROTOCOL.md's relay protocol."""
    text = (ROOT / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")
    relay = text[text.index("## Relay protocol") :]
    table = relay[relay.index("### Frames") : relay.index("\n### ", relay.index("### Frames") + 1)]
    rows = re.findall(r"^\| `0x([0-9A-Fa-f]{2})` \| ([A-Z_]+) \|", table, flags=re.MULTILINE)
    return {int(code, 16): name for code, name in rows}


def test_every_frame_type_is_documented() -> None:
    """docs/PROTOCOL.md's table of frames lists exactly the registered types, by name."""
    documented = _documented_frames()
    assert documented == {code: cls.NAME for code, cls in frames.frame_types().items()}


@pytest.mark.parametrize("frame_class", list(CASES), ids=lambda cls: cls.__name__)
def test_golden_bytes(frame_class: type[frames.Frame]) -> None:
    case = CASES[frame_class]
    assert case.example.encode() == case.wire
    assert frames.decode_frame(case.wire) == case.example


@pytest.mark.parametrize("frame_class", list(CASES), ids=lambda cls: cls.__name__)
@given(data=st.data())
def test_round_trip_of_every_frame_type(
    frame_class: type[frames.Frame], data: st.DataObject
) -> None:
    frame = data.draw(CASES[frame_class].values)
    encoded = frame.encode()
    assert encoded[0] == frame_class.TYPE
    assert frames.decode_frame(encoded) == frame
    assert frames.decode_frame(encoded).encode() == encoded
    assert len(encoded) <= frames.MAX_MESSAGE_BYTES


def test_a_type_byte_is_registered_once() -> None:
    before = dict(frames.frame_types())
    with pytest.raises(TypeError, match="0x20"):

        @dataclass(frozen=True)
        class Shout(frames.Frame):
            TYPE: ClassVar[int] = 0x20
            NAME: ClassVar[str] = "SHOUT"

    assert dict(frames.frame_types()) == before


@given(st.binary(max_size=400))
def test_hostile_bytes_raise_only_protocol_errors(data: bytes) -> None:
    try:
        frame = frames.decode_frame(data)
    except RelayProtocolError:
        return
    assert frame.encode() == data  # what decodes re-encodes exactly


@given(st.sampled_from([0x10, 0x11]), ids, st.binary(max_size=300))
def test_packet_frames_with_hostile_bodies(kind: int, node: bytes, body: bytes) -> None:
    data = bytes((kind,)) + node + body
    try:
        count = frames.check_packets(data)
    except RelayProtocolError:
        with pytest.raises(RelayProtocolError):
            frames.decode_frame(data)
        return
    node_id, datagrams = frames.decode_packets(data)
    assert node_id == node
    assert len(datagrams) == count
    assert frames.decode_frame(data).encode() == data


@given(frame_values, st.data())
def test_every_truncation_and_extension_is_refused(
    frame: frames.Frame, data: st.DataObject
) -> None:
    encoded = frame.encode()
    cut = data.draw(st.integers(0, len(encoded) - 1))
    for damaged in (encoded[:cut], encoded + b"\x00"):
        try:
            decoded = frames.decode_frame(damaged)
        except RelayProtocolError:
            continue
        if isinstance(decoded, frames.Allocate):
            # An ALLOCATE that asks for a nameplate, cut to its type byte, is a plain one.
            assert damaged == b"\x40" and encoded != damaged
            continue
        # Only an ERROR frame's reason and a mailbox body may grow or shrink and still parse.
        assert isinstance(decoded, (frames.Error, frames.Add, frames.Message))


def test_protocol_error_is_a_remote_error() -> None:
    assert issubclass(RelayProtocolError, RemoteProtocolError)


def test_layout_is_byte_exact() -> None:
    destination = bytes(range(32))
    data = frames.SendPackets(destination, [b"ab", b"cde"]).encode()
    assert data == b"\x10" + destination + b"\x00\x02" + b"\x00\x02\x00\x03" + b"abcde"
    source = bytes(range(100, 132))
    rewritten = frames.rewrite_send_as_receive(data, source)
    assert rewritten == frames.ReceivePackets(source, [b"ab", b"cde"]).encode()
    challenge = frames.Challenge(b"s" * 32, b"c" * 32).encode()
    assert challenge == b"\x01\x01" + b"s" * 32 + b"c" * 32
    assert frames.PeerGone(destination, 2).encode() == b"\x30" + destination + b"\x02"
    assert frames.Error(7, "full").encode() == b"\x7f\x07full"
    assert frames.login_message(b"s" * 32, b"c" * 32, destination).startswith(
        b"p2pcp relay login v1\x00"
    )


@pytest.mark.parametrize(
    "datagrams",
    [
        [b""],
        [b"x" * (frames.MAX_DATAGRAM_BYTES + 1)],
        [b"x"] * (frames.MAX_BATCH_DATAGRAMS + 1),
        [b"x" * 60000] * 3,
        [],
    ],
    ids=["empty", "oversize", "too-many", "too-many-bytes", "none"],
)
def test_encoder_refuses_batches_over_limits(datagrams: list[bytes]) -> None:
    with pytest.raises(RelayProtocolError):
        frames.SendPackets(bytes(32), datagrams).encode()


def test_decoder_refuses_lengths_that_do_not_add_up() -> None:
    good = frames.SendPackets(bytes(32), [b"abc", b"de"]).encode()
    with pytest.raises(RelayProtocolError):
        frames.decode_frame(good[:-1])
    zero_length = b"\x10" + bytes(32) + b"\x00\x02\x00\x00\x00\x03abc"
    with pytest.raises(RelayProtocolError):
        frames.decode_frame(zero_length)
    zero_count = b"\x10" + bytes(32) + b"\x00\x00"
    with pytest.raises(RelayProtocolError):
        frames.decode_frame(zero_count)
    with pytest.raises(RelayProtocolError):
        frames.decode_frame("text")  # type: ignore[arg-type]


@given(st.lists(st.binary(min_size=1, max_size=frames.MAX_DATAGRAM_BYTES).map(len), max_size=200))
def test_split_batches_keeps_order_and_fits(lengths: list[int]) -> None:
    datagrams = [bytes([index % 256]) * length for index, length in enumerate(lengths)]
    batches = list(frames.split_batches(datagrams))
    assert [d for part in batches for d in part] == datagrams
    for part in batches:
        assert frames.decode_packets(frames.SendPackets(bytes(32), part).encode())[1] == list(part)


def test_split_batches_makes_one_batch_when_it_fits() -> None:
    datagrams = [b"x" * 16000] * 8
    assert len(list(frames.split_batches(datagrams))) == 1
    assert len(list(frames.split_batches([b"x" * 16000] * 9))) == 2


@pytest.mark.parametrize("frame_class", [frames.Add, frames.Message])
def test_mailbox_bodies_are_bounded(frame_class: type[frames.Add | frames.Message]) -> None:
    most = frame_class(1, b"x" * frames.MAX_MAILBOX_BODY_BYTES).encode()
    assert frames.decode_frame(most).encode() == most
    with pytest.raises(RelayProtocolError):
        frame_class(1, b"x" * (frames.MAX_MAILBOX_BODY_BYTES + 1)).encode()
    with pytest.raises(RelayProtocolError):
        frames.decode_frame(most + b"x")


@pytest.mark.parametrize(
    "wire",
    [b"\x41\x00\x00\x00\x00", b"\x42\x00\x00\x00\x00", b"\x44\x00\x00\x00\x00x", b"\x42\x00\x01"],
    ids=["allocated-0", "claim-0", "add-0", "claim-short"],
)
def test_nameplate_zero_only_in_closed(wire: bytes) -> None:
    with pytest.raises(RelayProtocolError):
        frames.decode_frame(wire)
    with pytest.raises(RelayProtocolError):
        frames.Claim(0).encode()
    with pytest.raises(RelayProtocolError):
        frames.Closed(frames.MAX_NAMEPLATE + 1, 1).encode()


def test_allocate_without_a_nameplate_is_the_type_byte_alone() -> None:
    """Old clients send ``0x40`` alone: any free nameplate, as before."""
    assert frames.Allocate().encode() == b"\x40"
    assert frames.decode_frame(b"\x40") == frames.Allocate()


@pytest.mark.parametrize(
    "wire",
    [b"\x40\x00\x00\x00\x00", b"\x40\x00\x0f\x42\x40", b"\x40\x00\x07", b"\x40" + bytes(5)],
    ids=["zero", "over-999999", "short", "long"],
)
def test_a_requested_nameplate_is_1_to_999999(wire: bytes) -> None:
    with pytest.raises(RelayProtocolError):
        frames.decode_frame(wire)
    most = frames.Allocate(frames.MAX_REQUESTED_NAMEPLATE).encode()
    assert frames.decode_frame(most) == frames.Allocate(999_999)
    for bad in (0, frames.MAX_REQUESTED_NAMEPLATE + 1):
        with pytest.raises(RelayProtocolError):
            frames.Allocate(bad).encode()
