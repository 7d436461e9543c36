"""``--congestion``: names map to aioquic's registry, and the wiring reaches the connection."""

from __future__ import annotations

import pytest
from aioquic.quic.congestion.cubic import CubicCongestionControl
from aioquic.quic.congestion.reno import RenoCongestionControl
from aioquic.quic.connection import QuicConnection

from p2pcp.core.errors import UsageError
from p2pcp.net import Congestion, EndpointConfig
from p2pcp.net._aioquic import pacing, tuning
from p2pcp.net.congestion.bbr import BbrCongestionControl
from p2pcp.net.quic import configuration

SEED = bytes(range(32))


def _connection(congestion: str) -> QuicConnection:
    quic = QuicConnection(configuration=configuration.client_configuration(SEED, congestion))
    tuning.install_burst_pacer(quic)
    return quic


def test_the_choices_are_the_controllers() -> None:
    assert list(Congestion) == list(configuration.CONGESTION_CONTROLLERS)
    assert configuration.DEFAULT_CONGESTION in configuration.CONGESTION_CONTROLLERS
    # EndpointConfig's default (the CLI's without a flag) is the net layer's
    assert EndpointConfig().congestion is configuration.DEFAULT_CONGESTION


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("bbr", BbrCongestionControl),
        ("cubic", CubicCongestionControl),
        ("reno", RenoCongestionControl),
    ],
)
def test_each_name_builds_its_controller(name: str, cls: type) -> None:
    quic = _connection(name)
    assert type(quic._loss._cc) is cls
    assert type(configuration.server_configuration(SEED, name).congestion_control_algorithm) is str


def test_unknown_name_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown congestion controller 'vegas'"):
        configuration.client_configuration(SEED, "vegas")


def test_pacer_follows_a_modelled_rate() -> None:
    quic = _connection("bbr")
    pacer = quic._loss._pacer
    cc = quic._loss._cc
    assert isinstance(pacer, pacing.BurstPacer)
    assert pacer.controller is cc
    rate = cc.pacing_rate
    # a window and an RTT that would give a very different cwnd / RTT rate
    pacer.update_rate(congestion_window=10_000_000, smoothed_rtt=0.001)
    assert pacer.packet_time == pytest.approx(quic._max_datagram_size / rate)


def test_pacer_uses_window_over_rtt_without_a_model() -> None:
    quic = _connection("reno")
    pacer = quic._loss._pacer
    pacer.update_rate(congestion_window=120_000, smoothed_rtt=0.1)
    assert pacer.packet_time == pytest.approx(quic._max_datagram_size / 1_200_000)


def test_datagram_size_change_reaches_each_controller() -> None:
    for name in configuration.CONGESTION_CONTROLLERS:
        quic = _connection(name)
        cc = quic._loss._cc
        window = cc.congestion_window
        tuning.set_datagram_size(quic, 12_000)
        assert quic._loss._pacer._max_datagram_size == 12_000
        # the initial window keeps its packet count at the new size
        assert cc.congestion_window == window * 12_000 // 1200, name


def _paced_bytes(
    rate: float, size: int, wakeup_s: float, seconds: float, fragmenting: bool = False
) -> int:
    """Bytes a BurstPacer lets out at ``rate`` when the driver wakes every ``wakeup_s``
    (as aioquic's ``_write_application`` asks it: send while no next send time)."""
    pacer = pacing.BurstPacer(max_datagram_size=size, controller=_Model(rate))
    pacer.is_fragmenting = fragmenting
    pacer.update_rate(congestion_window=10**9, smoothed_rtt=0.01)
    sent = 0
    now = 0.0
    while now < seconds:
        while pacer.next_send_time(now) is None:
            pacer.update_after_send(now)
            sent += size
        now += wakeup_s
    return sent


class _Model:
    def __init__(self, rate: float) -> None:
        self.pacing_rate = rate


@pytest.mark.parametrize("rate", [6.25e6, 12.5e6, 40e6])
def test_pacer_keeps_its_rate_when_asyncio_wakes_it_late(rate: float) -> None:
    # asyncio sleeps in whole milliseconds: a timer due in 0.2 ms fires after
    # ~1-1.5 ms; the bucket must hold what accrued meanwhile (above ~90 MB/s
    # BURST_MAX_BYTES caps it, and acks wake the sender far more often)
    sent = _paced_bytes(rate, 1472, wakeup_s=0.0015, seconds=2.0)
    assert sent >= 0.97 * rate * 2.0


@pytest.mark.parametrize(
    "rate, wakeup_s", [(125e6, 0.0001), (125e6, 0.0003), (12.5e6, 0.001), (12.5e6, 0.0015)]
)
def test_fragmented_datagrams_go_no_faster_than_the_modelled_rate(
    rate: float, wakeup_s: float
) -> None:
    # aioquic's pacer lets a packet go on any credit and forgets the rest of
    # its cost: up to one packet per wake-up for free (16,000-byte datagrams
    # woken every 0.1 ms at 1 Gbit/s: 2x the rate), which overflows queues
    # and loses fragments. Kept exactly, the pacer sends the rate, plus one
    # burst, plus one packet of debt.
    size = 16_000
    seconds = 1.0
    pacer = pacing.BurstPacer(max_datagram_size=size, controller=_Model(rate))
    pacer.update_rate(congestion_window=10**9, smoothed_rtt=0.01)
    burst = pacer.bucket_max / (pacer.packet_time or 1.0) * size
    sent = _paced_bytes(rate, size, wakeup_s=wakeup_s, seconds=seconds, fragmenting=True)
    assert 0.97 * rate * seconds <= sent <= rate * seconds + burst + size
    # whole datagrams keep aioquic's surplus (see BurstPacer)
    assert _paced_bytes(rate, 1472, wakeup_s=wakeup_s, seconds=seconds) > sent


def test_pacer_does_not_charge_acks_or_small_packets_in_full() -> None:
    # A receiver sends hundreds of ack-only packets a second while its own
    # modelled rate is tiny: charged as full datagrams they put the pacer
    # into debt, and a request waited seconds behind it.
    pacer = pacing.BurstPacer(max_datagram_size=16_000, controller=_Model(100_000.0))
    pacer.is_fragmenting = True
    pacer.update_rate(congestion_window=10**9, smoothed_rtt=0.01)
    now = 0.0
    for _ in range(1000):
        now += 0.001
        pacer.update_after_send(now)  # an ack-only packet, sent while an ack was due
        pacer.refund(16_000 - 0)  # none of it in flight
    assert pacer.next_send_time(now) is None  # a request goes at once
    pacer.update_after_send(now)
    pacer.refund(16_000 - 200)  # a 200-byte request
    assert pacer.packet_time is not None
    assert pacer.bucket_time > pacer.bucket_max - pacer.packet_time


def test_pacer_bursts_stay_small_on_fast_paths() -> None:
    pacer = pacing.BurstPacer(max_datagram_size=16_000, controller=_Model(125e6))
    pacer.update_rate(congestion_window=10**9, smoothed_rtt=0.01)
    assert pacer.packet_time is not None
    burst_bytes = pacer.bucket_max / pacer.packet_time * 16_000
    assert burst_bytes <= pacing.BURST_MAX_BYTES
