"""The datagram-size policy (net/pmtu/sizer.py) on a virtual clock, one test per rule."""

from __future__ import annotations

import pytest

from p2pcp.net.pmtu.fragment import PROBATION_PACKETS, WHOLE_EVERY
from p2pcp.net.pmtu.probe import (
    FLOOR_BYTES,
    MAX_ATTEMPTS,
    MAX_DATAGRAM_BYTES,
    PROBE_TIMEOUT_S,
    Probe,
    encode_probe,
)
from p2pcp.net.pmtu.sizer import (
    RELAY_DATAGRAM_BYTES,
    DatagramSizer,
    FragmentsAbandoned,
    FragmentsCarried,
    SizeChanged,
    SizerEvent,
    TransmitSizes,
)

DIRECT = {"is_relay": False, "has_direct_address": True}
RELAY = {"is_relay": True, "has_direct_address": False}
SPRAY = {"is_relay": False, "has_direct_address": False}
QUIC_DATAGRAM = b"\x40" + bytes(1451)  # short header: the fixed bit is set


def events(sizer: DatagramSizer) -> list[SizerEvent]:
    drained = []
    while (event := sizer.next_event()) is not None:
        drained.append(event)
    return drained


def echo(sizer: DatagramSizer, probes: list[Probe], *, mtu: int, fragmented_up_to: int = 0) -> None:
    """The peer echoes what the path carries: whole probes up to ``mtu``, and
    probes that may fragment up to ``fragmented_up_to``."""
    for probe in probes:
        limit = max(mtu, fragmented_up_to) if probe.may_fragment else mtu
        if probe.size <= limit:
            sizer.probe_acked(probe.nonce, probe.size)


def started(path: dict[str, bool], *, cap: int | None = None) -> DatagramSizer:
    sizer = DatagramSizer(cap=cap)
    sizer.handshake_completed(**path)
    return sizer


def test_nothing_happens_before_the_handshake() -> None:
    sizer = DatagramSizer()
    sizer.path_changed(**DIRECT)
    sizer.path_changed(**RELAY)
    assert sizer.size == FLOOR_BYTES
    assert sizer.probes_to_send(0.0) == []
    assert sizer.get_timer() is None
    assert sizer.transmit_sizes(0.0) is None
    assert events(sizer) == []


def test_the_handshake_starts_from_the_floor_and_probes_the_direct_path() -> None:
    sizer = started(DIRECT)
    assert events(sizer) == [SizeChanged(FLOOR_BYTES)]
    probes = sizer.probes_to_send(0.0)
    whole = [p.size for p in probes if not p.may_fragment]
    assert whole == [1352, 1452, 1472, 8952, 8972, MAX_DATAGRAM_BYTES]
    # one more rung, at the top, that may leave in IP fragments
    assert [p.size for p in probes if p.may_fragment] == [MAX_DATAGRAM_BYTES]
    assert sizer.is_probing
    assert sizer.get_timer() == pytest.approx(PROBE_TIMEOUT_S)


def test_the_relay_is_probed_through_it_without_fragments() -> None:
    sizer = started(RELAY)
    probes = sizer.probes_to_send(0.0)
    assert not any(p.may_fragment for p in probes)
    assert max(p.size for p in probes) == RELAY_DATAGRAM_BYTES
    events(sizer)
    echo(sizer, probes, mtu=65535)  # a stream carries any size
    assert sizer.size == RELAY_DATAGRAM_BYTES
    # each echo that proves more is applied as it comes
    assert events(sizer)[-1] == SizeChanged(RELAY_DATAGRAM_BYTES)
    assert not sizer.is_probing
    assert sizer.get_timer() is None


def test_a_path_without_a_direct_address_is_not_probed() -> None:
    sizer = started(SPRAY)
    assert events(sizer) == [SizeChanged(FLOOR_BYTES)]
    assert sizer.probes_to_send(0.0) == []
    assert sizer.get_timer() is None


@pytest.mark.parametrize("path", [DIRECT, RELAY])
def test_the_cap_is_never_exceeded(path: dict[str, bool]) -> None:
    sizer = started(path, cap=4000)
    probes = sizer.probes_to_send(0.0)
    assert max(p.size for p in probes) == 4000
    echo(sizer, probes, mtu=65535, fragmented_up_to=65535)
    assert sizer.size == 4000


def test_the_size_grows_only_by_an_echo_of_the_current_attempt() -> None:
    sizer = started(DIRECT, cap=1452)
    probes = sizer.probes_to_send(0.0)
    events(sizer)
    top = max(probes, key=lambda p: p.size)
    sizer.probe_acked(top.nonce ^ 1, top.size)  # unknown nonce
    sizer.probe_acked(top.nonce, top.size + 1)  # another size
    assert sizer.size == FLOOR_BYTES
    # a retry replaces the nonce: the echo of the first attempt is stale
    retries = sizer.probes_to_send(PROBE_TIMEOUT_S)
    assert {p.size for p in retries} == {p.size for p in probes}
    sizer.probe_acked(top.nonce, top.size)
    assert sizer.size == FLOOR_BYTES
    assert events(sizer) == []
    echo(sizer, retries, mtu=1452)
    assert sizer.size == 1452
    assert events(sizer) == [SizeChanged(1352), SizeChanged(1452)]


def test_unanswered_probes_are_retried_then_given_up() -> None:
    sizer = started(DIRECT)
    now = 0.0
    sent = len(sizer.probes_to_send(now))
    rounds = 1
    while (timer := sizer.get_timer()) is not None:
        assert timer > now
        now = timer
        assert now <= 10.0, "probing did not end"
        sizer.handle_timer(now)
        probes = sizer.probes_to_send(now)
        if probes:
            assert len(probes) == sent
            rounds += 1
    assert rounds == MAX_ATTEMPTS
    assert now == pytest.approx(MAX_ATTEMPTS * PROBE_TIMEOUT_S)
    assert not sizer.is_probing
    assert sizer.size == FLOOR_BYTES


def test_every_path_change_starts_again_from_the_floor() -> None:
    sizer = started(DIRECT)
    echo(sizer, sizer.probes_to_send(0.0), mtu=1452, fragmented_up_to=65535)
    assert sizer.size == 1452
    assert sizer.fragmented_size == MAX_DATAGRAM_BYTES
    events(sizer)
    sizer.path_changed(**RELAY)
    assert events(sizer) == [SizeChanged(FLOOR_BYTES)]
    assert sizer.size == FLOOR_BYTES
    assert sizer.transmit_sizes(1.0) is None  # the guard went with the old path
    assert sizer.fragmented_size is None
    probes = sizer.probes_to_send(1.0)
    assert probes and not any(p.may_fragment for p in probes)


def test_a_fragmented_echo_starts_a_guard_on_probation() -> None:
    sizer = started(DIRECT)
    echo(sizer, sizer.probes_to_send(0.0), mtu=1452, fragmented_up_to=65535)
    assert events(sizer)[-2:] == [
        SizeChanged(1452),
        FragmentsCarried(fragmented=MAX_DATAGRAM_BYTES, whole=1452),
    ]
    # whole datagrams first (fragment.py's probation)
    assert sizer.transmit_sizes(0.1) == TransmitSizes(
        settled=1452, packet=1452, is_fragmenting=False, may_fragment=False
    )
    assert not sizer.is_fragmenting


def test_a_whole_echo_as_large_ends_the_guard() -> None:
    sizer = started(DIRECT)
    probes = sizer.probes_to_send(0.0)
    fragmented = [p for p in probes if p.may_fragment]
    whole = [p for p in probes if not p.may_fragment]
    echo(sizer, whole, mtu=1452)
    echo(sizer, fragmented, mtu=1452, fragmented_up_to=65535)
    assert sizer.fragmented_size == MAX_DATAGRAM_BYTES
    retries = sizer.probes_to_send(PROBE_TIMEOUT_S)  # the larger whole rungs again
    echo(sizer, retries, mtu=65535)
    assert sizer.size == MAX_DATAGRAM_BYTES
    assert sizer.fragmented_size is None
    assert sizer.transmit_sizes(1.0) is None


def test_fragments_carry_data_after_probation_and_stop_when_they_are_lost() -> None:
    sizer = started(DIRECT)
    echo(sizer, sizer.probes_to_send(0.0), mtu=1452, fragmented_up_to=65535)
    events(sizer)
    now = 0.0
    for _ in range(PROBATION_PACKETS):  # a clean window of whole datagrams
        sizer.packet_resolved(1452, False, now)
    plans = []
    for _ in range(WHOLE_EVERY):
        now += 0.001
        plan = sizer.transmit_sizes(now)
        assert plan is not None
        plans.append(plan)
    assert sizer.is_fragmenting
    assert all(p.settled == MAX_DATAGRAM_BYTES and p.is_fragmenting for p in plans)
    # one transmit in WHOLE_EVERY builds whole datagrams, so both kinds are compared
    assert sum(p.packet == 1452 for p in plans) == 1
    assert all(p.may_fragment == (p.packet > 1452) for p in plans)
    assert events(sizer) == []
    for _ in range(200):  # fragmented datagrams lost, whole ones not
        now += 0.001
        sizer.packet_resolved(MAX_DATAGRAM_BYTES, True, now)
        sizer.packet_resolved(1452, False, now)
    assert not sizer.is_fragmenting
    (abandoned,) = events(sizer)
    assert isinstance(abandoned, FragmentsAbandoned)
    assert abandoned.whole == 1452
    assert abandoned.fragmented_loss > abandoned.whole_loss
    plan = sizer.transmit_sizes(now)
    assert plan is not None and plan.settled == plan.packet == 1452


def test_packet_fates_without_a_guard_change_nothing() -> None:
    sizer = started(RELAY)
    events(sizer)
    for _ in range(100):
        sizer.packet_resolved(1200, True, 0.0)
    assert events(sizer) == []
    assert sizer.transmit_sizes(0.0) is None


def test_a_refused_quic_datagram_goes_back_to_the_floor_and_stops_fragments() -> None:
    sizer = started(DIRECT)
    echo(sizer, sizer.probes_to_send(0.0), mtu=1452, fragmented_up_to=65535)
    events(sizer)
    sizer.datagram_refused(QUIC_DATAGRAM)
    assert events(sizer) == [SizeChanged(FLOOR_BYTES, is_refusal=True)]
    assert sizer.size == FLOOR_BYTES
    assert sizer.transmit_sizes(1.0) is None
    sizer.datagram_refused(QUIC_DATAGRAM)  # already there: nothing to decide
    assert events(sizer) == []


def test_a_refused_probe_rules_out_its_rung_and_larger_ones() -> None:
    sizer = started(DIRECT)
    probes = sizer.probes_to_send(0.0)
    events(sizer)
    refused = next(p for p in probes if p.size == 8952 and not p.may_fragment)
    sizer.datagram_refused(encode_probe(refused.nonce, refused.size))
    assert events(sizer) == []  # the size is not touched
    retries = sizer.probes_to_send(PROBE_TIMEOUT_S)
    assert {p.size for p in retries if not p.may_fragment} == {1352, 1452, 1472}
    assert [p.size for p in retries if p.may_fragment] == [MAX_DATAGRAM_BYTES]
    sizer.datagram_refused(b"\x00p2")  # a truncated control packet: ignored
    assert sizer.size == FLOOR_BYTES
