"""Relay frame codec: byte-exact round trips; hostile bytes raise only RelayProtocolError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pcp.core.errors import RemoteProtocolError
from p2pcp.relay import frames
from p2pcp.relay.frames import RelayProtocolError

ids = st.binary(min_size=32, max_size=32)
datagram = st.binary(min_size=1, max_size=3000)
batch = st.lists(datagram, min_size=1, max_size=frames.MAX_BATCH_DATAGRAMS)

frame_values = st.one_of(
    st.builds(frames.Challenge, st.integers(0, 255), ids, ids),
    st.builds(frames.Login, st.integers(0, 255), ids, st.binary(min_size=64, max_size=64)),
    st.just(frames.LoginOk()),
    st.builds(frames.SendPackets, ids, batch),
    st.builds(frames.ReceivePackets, ids, batch),
    st.builds(frames.Ping, st.binary(min_size=8, max_size=8)),
    st.builds(frames.Pong, st.binary(min_size=8, max_size=8)),
    st.builds(frames.PeerGone, ids, st.integers(0, 255)),
    st.builds(frames.Error, st.integers(0, 255), st.text(max_size=40)),
)


@given(frame_values)
def test_round_trip(frame: frames.Frame) -> None:
    data = frames.encode_frame(frame)
    assert frames.decode_frame(data) == frame
    assert frames.encode_frame(frames.decode_frame(data)) == data
    assert len(data) <= frames.MAX_MESSAGE_BYTES


@given(st.binary(max_size=400))
def test_hostile_bytes_raise_only_protocol_errors(data: bytes) -> None:
    try:
        frame = frames.decode_frame(data)
    except RelayProtocolError:
        return
    assert frames.encode_frame(frame) == data  # what decodes re-encodes exactly


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
    assert frames.encode_frame(frames.decode_frame(data)) == data


@given(frame_values, st.data())
def test_every_truncation_and_extension_is_refused(
    frame: frames.Frame, data: st.DataObject
) -> None:
    encoded = frames.encode_frame(frame)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    for damaged in (encoded[:cut], encoded + b"\x00"):
        try:
            decoded = frames.decode_frame(damaged)
        except RelayProtocolError:
            continue
        # Only an ERROR frame's reason may grow or shrink and still parse.
        assert isinstance(decoded, frames.Error)


def test_protocol_error_is_a_remote_error() -> None:
    assert issubclass(RelayProtocolError, RemoteProtocolError)


def test_layout_is_byte_exact() -> None:
    destination = bytes(range(32))
    data = frames.encode_send_packets(destination, [b"ab", b"cde"])
    assert data == b"\x10" + destination + b"\x00\x02" + b"\x00\x02\x00\x03" + b"abcde"
    source = bytes(range(100, 132))
    rewritten = frames.rewrite_send_as_receive(data, source)
    assert rewritten == frames.encode_receive_packets(source, [b"ab", b"cde"])
    challenge = frames.encode_challenge(b"s" * 32, b"c" * 32)
    assert challenge == b"\x01\x01" + b"s" * 32 + b"c" * 32
    assert frames.encode_peer_gone(destination, 2) == b"\x30" + destination + b"\x02"
    assert frames.encode_error(7, "full") == b"\x7f\x07full"
    assert frames.login_message(b"s" * 32, b"c" * 32, destination).startswith(
        b"p2pcp relay login v1\x00"
    )


NODE = bytes(range(32))
SERVER = bytes(range(32, 64))
NONCE = bytes(range(64, 96))
SIGNATURE = bytes(range(96, 160))

# One frame of every type and its bytes, spelled out from the tables in
# docs/PROTOCOL.md ("Relay protocol", "Frames"): the wire format, pinned.
GOLDEN = [
    (frames.Challenge(version=1, server_id=SERVER, challenge=NONCE), b"\x01\x01" + SERVER + NONCE),
    (frames.Login(version=1, node_id=NODE, signature=SIGNATURE), b"\x02\x01" + NODE + SIGNATURE),
    (frames.LoginOk(), b"\x03"),
    (
        frames.SendPackets(destination=NODE, datagrams=[b"ab", b"cde"]),
        b"\x10" + NODE + b"\x00\x02" + b"\x00\x02\x00\x03" + b"abcde",
    ),
    (frames.ReceivePackets(source=NODE, datagrams=[b"x"]), b"\x11" + NODE + b"\x00\x01\x00\x01x"),
    (frames.Ping(payload=b"pingpong"), b"\x20pingpong"),
    (frames.Pong(payload=b"pongping"), b"\x21pongping"),
    (frames.PeerGone(node_id=NODE, reason=1), b"\x30" + NODE + b"\x01"),
    (frames.Error(code=9, reason="\u00e9 stop"), b"\x7f\x09\xc3\xa9 stop"),
]


@pytest.mark.parametrize(
    ("frame", "data"), GOLDEN, ids=[type(frame).__name__ for frame, _ in GOLDEN]
)
def test_golden_bytes(frame: frames.Frame, data: bytes) -> None:
    assert frames.encode_frame(frame) == data
    assert frames.decode_frame(data) == frame


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
        frames.encode_send_packets(bytes(32), datagrams)


def test_decoder_refuses_lengths_that_do_not_add_up() -> None:
    good = frames.encode_send_packets(bytes(32), [b"abc", b"de"])
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
        assert frames.decode_packets(frames.encode_send_packets(bytes(32), part))[1] == list(part)


def test_split_batches_makes_one_batch_when_it_fits() -> None:
    datagrams = [b"x" * 16000] * 8
    assert len(list(frames.split_batches(datagrams))) == 1
    assert len(list(frames.split_batches([b"x" * 16000] * 9))) == 2
