"""The in-memory network (tests/support/memnet.py) and MagicSock over it, with
no socket: what the network promises, then MagicSock's stateless answers and
its refused-path rule driven through the transport seam."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from p2pcp.core.identity import SecretKey
from p2pcp.net import PathPolicy
from p2pcp.net.paths.disco import DiscoBox, Ping, Pong
from p2pcp.net.paths.magicsock import MagicSock
from p2pcp.net.pmtu.probe import encode_probe, encode_probe_ack
from p2pcp.net.udp.transport import Address
from tests.support.aio import run_bounded
from tests.support.memnet import LinkShape, MemoryNetwork, MemoryTransport, sockets_forbidden

TEST_TIMEOUT_S = 10.0
KEY_A = SecretKey(bytes([1] * 32))
KEY_B = SecretKey(bytes([2] * 32))


class Inbox:
    def __init__(self) -> None:
        self.received: list[tuple[bytes, Address]] = []
        self.refused: list[Address] = []
        self.too_big: list[bytes] = []
        self.changed = asyncio.Event()

    def receive(self, batch: list[tuple[bytes, Address]]) -> None:
        self.received.extend(batch)
        self.changed.set()

    def refuse(self, address: Address) -> None:
        self.refused.append(address)
        self.changed.set()

    def big(self, data: bytes, address: Address) -> None:
        self.too_big.append(data)

    def bind(self, network: MemoryNetwork, host: str, port: int = 0) -> MemoryTransport:
        return network.bind(host, port, self.receive, self.big, self.refuse)

    async def until(self, count: int) -> None:
        while len(self.received) + len(self.refused) < count:
            self.changed.clear()
            await self.changed.wait()


def run(body: Callable[[], Awaitable[None]]) -> None:
    run_bounded(body, TEST_TIMEOUT_S)


def test_sockets_are_forbidden_inside_the_guard() -> None:
    with sockets_forbidden(), pytest.raises(OSError):
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()  # and allowed again after


def test_datagrams_arrive_in_order_with_their_source_or_are_refused(no_sockets: None) -> None:
    async def body() -> None:
        network = MemoryNetwork(shape=LinkShape(delay_s=0.01))
        inbox_a, inbox_b = Inbox(), Inbox()
        a, b = inbox_a.bind(network, "10.0.0.1"), inbox_b.bind(network, "10.0.0.2", 4000)
        assert b.address == ("10.0.0.2", 4000)
        with pytest.raises(OSError):
            inbox_b.bind(network, "10.0.0.2", 4000)
        datagrams = [bytes([n]) * 100 for n in range(50)]
        a.send(datagrams, b.address)
        assert inbox_b.received == []  # never delivered from inside send
        a.send([b"nobody"], ("10.0.0.2", 4001))  # a known host: refused
        a.send([b"nowhere"], ("10.9.9.9", 1))  # an unknown host: silently dropped
        await inbox_b.until(50)
        await inbox_a.until(1)
        assert inbox_b.received == [(d, a.address) for d in datagrams]
        assert inbox_a.refused == [("10.0.0.2", 4001)]
        assert network.counts["unroutable"] == 1
        b.close()
        a.send([b"after close"], ("10.0.0.2", 4000))
        await inbox_a.until(2)
        assert inbox_a.refused[-1] == ("10.0.0.2", 4000)

    run(body)


def _lossy_run(seed: int) -> list[bytes]:
    received: list[bytes] = []

    async def body() -> None:
        shape = LinkShape(loss=0.2, delay_s=0.002, jitter_s=0.01)
        network = MemoryNetwork(seed=seed, shape=shape)
        inbox_a, inbox_b = Inbox(), Inbox()
        a, b = inbox_a.bind(network, "10.0.0.1"), inbox_b.bind(network, "10.0.0.2")
        a.send([n.to_bytes(2, "big") for n in range(1000)], b.address)
        await asyncio.sleep(0.05)
        received.extend(data for data, _source in inbox_b.received)
        assert network.counts["lost"] + len(received) == 1000

    run(body)
    return received


def test_loss_and_reordering_follow_the_seed(no_sockets: None) -> None:
    first, again, other = _lossy_run(7), _lossy_run(7), _lossy_run(8)
    assert 700 <= len(first) <= 900  # 20% loss
    assert sorted(first) != first  # jitter reorders
    assert sorted(first) == sorted(again)  # the same seed loses the same datagrams
    assert sorted(first) != sorted(other)


def test_a_bottleneck_serialises_and_tail_drops_and_a_small_mtu_loses_big_datagrams(
    no_sockets: None,
) -> None:
    async def body() -> None:
        shape = LinkShape(rate_bytes_per_s=1_000_000, queue_bytes=10_000, max_datagram_bytes=1400)
        network = MemoryNetwork(shape=shape)
        inbox_a, inbox_b = Inbox(), Inbox()
        a, b = inbox_a.bind(network, "10.0.0.1"), inbox_b.bind(network, "10.0.0.2")
        started = asyncio.get_running_loop().time()
        a.send([bytes(1500)], b.address)  # above the MTU: lost
        a.send([bytes(1500)], b.address, may_fragment=True)  # fragmented: carried
        a.send([bytes(1000)] * 30, b.address)  # 9 more fit the 10 kB queue
        await inbox_b.until(10)
        took = asyncio.get_running_loop().time() - started
        assert network.counts["too_big"] == 1
        assert network.counts["queue_full"] == 21
        assert [len(d) for d, _s in inbox_b.received] == [1500] + [1000] * 9
        assert took >= 0.0105  # 10.5 kB at 1 MB/s

    run(body)


def _magicsock(network: MemoryNetwork, host: str, inbox: Inbox) -> MagicSock:
    magicsock = MagicSock(
        KEY_A,
        policy=PathPolicy.DIRECT_ONLY,
        on_direct_batch=inbox.receive,
        on_relay_batch=lambda path, datagrams: None,
        on_probe_ack=lambda nonce, size, address: None,
        on_too_big=inbox.big,
        own_addresses=lambda: [],
        on_refused=inbox.refuse,
    )
    magicsock.bind(0, network.transport(host))
    return magicsock


def test_magicsock_answers_probes_and_stranger_pings_statelessly(no_sockets: None) -> None:
    async def body() -> None:
        network = MemoryNetwork()
        magicsock = _magicsock(network, "10.0.0.1", Inbox())
        here = ("10.0.0.1", magicsock.local_port)
        peer_inbox = Inbox()
        peer = peer_inbox.bind(network, "10.0.0.2")
        peer.send([encode_probe(77, 1300)], here)
        box = DiscoBox(KEY_B)
        peer.send([box.seal(KEY_A.public, Ping(b"t" * 12))], here)
        await peer_inbox.until(2)
        assert peer_inbox.received[0] == (encode_probe_ack(77, 1300), here)
        sender, pong = box.open(peer_inbox.received[1][0])
        assert sender == KEY_A.public
        assert pong == Pong(b"t" * 12, peer.address)  # where the ping came from
        assert isinstance(magicsock.udp, MemoryTransport)  # no socket was involved
        await magicsock.close()

    run(body)


class User:
    def __init__(self) -> None:
        self.failures: list[str] = []

    def path_changed(self, kind: str, old_kind: str) -> None:
        pass

    def path_failed(self, reason: str) -> None:
        self.failures.append(reason)


def test_a_path_whose_every_address_refuses_fails_its_connections(no_sockets: None) -> None:
    """Datagrams sprayed to two candidates where nothing listens come back
    refused; once every candidate refused, the path's users hear why."""

    async def body() -> None:
        network = MemoryNetwork(shape=LinkShape(delay_s=0.001))
        inbox = Inbox()
        magicsock = _magicsock(network, "10.0.0.1", inbox)
        network.add_host("10.0.0.2")
        candidates = [("10.0.0.2", 5000), ("10.0.0.2", 5001)]
        path = magicsock.client_path(KEY_B.public, candidates, None)
        user = User()
        loop = asyncio.get_running_loop()
        path.attach(user, loop.time(), is_discovering=False)
        assert magicsock.send(path, [b"\x40 a QUIC datagram"]) == "direct"
        await inbox.until(2)
        for address in inbox.refused:
            path.receive_refused(address)  # what Endpoint does with on_refused
        assert sorted(inbox.refused) == candidates
        assert user.failures == [
            "connection refused at every address (nothing listens there: stopped?)"
        ]
        await magicsock.close()

    run(body)
