"""The datagram-size prober and its codec, on a virtual clock (no sockets)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pcp.core.errors import RemoteProtocolError
from p2pcp.net.pmtu.probe import (
    FLOOR_BYTES,
    HEADER_BYTES,
    MAX_ATTEMPTS,
    MAX_DATAGRAM_BYTES,
    PROBE_TIMEOUT_S,
    TYPE_PROBE,
    TYPE_PROBE_ACK,
    DatagramSizeProber,
    Probe,
    decode_control,
    encode_probe,
    encode_probe_ack,
    is_control_packet,
    ladder_for,
)


def test_probe_round_trip() -> None:
    packet = encode_probe(0x1122334455667788, 1452)
    assert len(packet) == 1452
    assert is_control_packet(packet)
    decoded = decode_control(packet)
    assert (decoded.kind, decoded.nonce, decoded.size) == (TYPE_PROBE, 0x1122334455667788, 1452)


def test_ack_round_trip_is_short() -> None:
    ack = encode_probe_ack(7, 16000)
    assert len(ack) == HEADER_BYTES
    decoded = decode_control(ack)
    assert (decoded.kind, decoded.nonce, decoded.size) == (TYPE_PROBE_ACK, 7, 16000)


def test_truncated_probe_is_refused() -> None:
    with pytest.raises(RemoteProtocolError):
        decode_control(encode_probe(1, 1452)[:1400])


def test_quic_packets_are_not_control_packets() -> None:
    assert not is_control_packet(b"\x40" + bytes(30))  # short header, fixed bit set
    assert not is_control_packet(b"\xc0" + bytes(30))  # long header
    assert not is_control_packet(b"")


@given(st.binary(max_size=80))
def test_decoder_raises_only_our_error(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_control(data)


def test_ladder_respects_cap() -> None:
    assert ladder_for(None) == (1352, 1452, 1472, 8952, 8972, MAX_DATAGRAM_BYTES)
    assert ladder_for(1452) == (1352, 1452)
    assert ladder_for(1300) == (1300,)
    assert ladder_for(4000) == (1352, 1452, 1472, 4000)
    assert ladder_for(FLOOR_BYTES) == ()
    assert ladder_for(100_000)[-1] == MAX_DATAGRAM_BYTES


class Path:
    """A virtual path: echoes probes up to ``mtu``, with optional loss."""

    def __init__(self, mtu: int, lose_first: int = 0) -> None:
        self.mtu = mtu
        self.lose_first = lose_first

    def deliver(self, prober: DatagramSizeProber, probes: list[Probe]) -> None:
        for probe in probes:
            if self.lose_first > 0:
                self.lose_first -= 1
                continue
            if probe.size <= self.mtu:
                prober.receive_ack(probe.nonce, probe.size)


def run(prober: DatagramSizeProber, path: Path, *, until: float = 10.0) -> float:
    """Drive the prober on a virtual clock; returns the time it finished."""
    now = 0.0
    path.deliver(prober, prober.probes_to_send(now))
    while not prober.is_finished:
        timer = prober.get_timer()
        assert timer is not None and timer > now
        now = timer
        assert now <= until, "prober did not finish in time"
        prober.handle_timer(now)
        path.deliver(prober, prober.probes_to_send(now))
    assert prober.get_timer() is None
    return now


def test_loopback_reaches_the_top_in_one_round_trip() -> None:
    prober = DatagramSizeProber()
    assert prober.size == FLOOR_BYTES
    assert run(prober, Path(mtu=65535)) == 0.0
    assert prober.size == MAX_DATAGRAM_BYTES


def test_ethernet_path_settles_on_1452_after_timeouts() -> None:
    prober = DatagramSizeProber()
    finished = run(prober, Path(mtu=1500 - 48))
    assert prober.size == 1452
    assert finished == pytest.approx(MAX_ATTEMPTS * PROBE_TIMEOUT_S)


def test_ipv4_ethernet_path_settles_on_1472() -> None:
    prober = DatagramSizeProber()
    run(prober, Path(mtu=1500 - 28))
    assert prober.size == 1472


def test_cap_is_never_exceeded() -> None:
    prober = DatagramSizeProber(cap=1452)
    run(prober, Path(mtu=65535))
    assert prober.size == 1452


def test_one_lost_probe_is_retried() -> None:
    prober = DatagramSizeProber(cap=1452)
    finished = run(prober, Path(mtu=65535, lose_first=2))  # both rungs' first probes
    assert prober.size == 1452
    assert finished == pytest.approx(PROBE_TIMEOUT_S)


def test_small_mtu_link_gets_its_rung() -> None:
    prober = DatagramSizeProber()
    run(prober, Path(mtu=1400 - 48))
    assert prober.size == 1352


def test_black_hole_keeps_the_floor() -> None:
    prober = DatagramSizeProber()
    run(prober, Path(mtu=1300))
    assert prober.size == FLOOR_BYTES


def test_too_big_settles_that_rung_and_larger_ones() -> None:
    prober = DatagramSizeProber()
    probes = prober.probes_to_send(0.0)
    by_size = {p.size: p for p in probes}
    prober.receive_too_big(by_size[1472].nonce)
    prober.receive_ack(by_size[1452].nonce, 1452)
    assert prober.is_finished
    assert prober.size == 1452


def test_stale_or_forged_acks_are_ignored() -> None:
    prober = DatagramSizeProber(cap=1300)  # one rung: 1300
    first = prober.probes_to_send(0.0)[0]
    assert not prober.receive_ack(12345, 1300)  # unknown nonce
    assert not prober.receive_ack(first.nonce, 9000)  # wrong size
    retry = prober.probes_to_send(PROBE_TIMEOUT_S)[0]
    assert not prober.receive_ack(first.nonce, 1300)  # an old attempt
    assert prober.receive_ack(retry.nonce, 1300)
    assert prober.size == 1300


def test_size_only_grows() -> None:
    prober = DatagramSizeProber()
    probes = {p.size: p for p in prober.probes_to_send(0.0)}
    assert prober.receive_ack(probes[MAX_DATAGRAM_BYTES].nonce, MAX_DATAGRAM_BYTES)
    assert not prober.receive_ack(probes[1452].nonce, 1452)
    assert prober.size == MAX_DATAGRAM_BYTES
    assert prober.is_finished
