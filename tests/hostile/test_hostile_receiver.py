"""Receivers that misbehave against the real sender (Provider in process):
unknown hashes, absurd ranges, malformed and endless requests, thousands of
streams, a flood of connections, a stranger's DONE. After each, an honest
receiver still fetches everything byte-exact.
"""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
import time
from pathlib import Path

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from p2pcp.blobs.encoding import ALL, DecodeFinished, LeafVerified, RangeDecoder
from p2pcp.blobs.tree import LEAF_SIZE
from p2pcp.core.defaults import MAX_RECEIVER_CONNECTIONS
from p2pcp.core.errors import EXIT_UNREACHABLE, ConnectionLostError
from p2pcp.core.identity import NodeId
from p2pcp.net import EndpointConfig, PathPolicy
from p2pcp.net.quic.configuration import ALPN
from p2pcp.net.quic.endpoint import Endpoint
from p2pcp.transfer import events, wire
from p2pcp.transfer.provider import ProviderLimits
from tests.support.peers import (
    IMPOSTOR_KEY,
    STEP_TIMEOUT_S,
    Reply,
    RunningProvider,
    client,
    fetch,
    get_payload,
    raw_request,
    start_provider,
)

from .harness import final_files

RNG = random.Random(11)
BIG = RNG.randbytes(5 * LEAF_SIZE + 3)
SMALL = b"small file\n"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "big.bin").write_bytes(BIG)
    (src / "sub" / "small.txt").write_bytes(SMALL)
    return src


def _expected() -> dict[str, bytes]:
    return {"src/big.bin": BIG, "src/sub/small.txt": SMALL}


async def _honest_fetch_is_exact(running: RunningProvider, out: Path) -> None:
    await fetch(running.ticket, out)
    assert final_files(out) == _expected()


def _blob_root(running: RunningProvider, path: str) -> bytes:
    return next(
        entry.root for entry in running.provider.collection.manifest.files if entry.path == path
    )


def _verify(root: bytes, ranges: tuple[tuple[int, int], ...], reply: Reply) -> list[int]:
    """The indexes of the leaves a reply proved (it must be a complete, valid body)."""
    assert reply.status == wire.STATUS_OK, reply
    decoder = RangeDecoder(root, ranges)
    decoder.receive_data(reply.data[1:])
    leaves = []
    while (event := decoder.next_event()) is not None:
        if isinstance(event, LeafVerified):
            leaves.append(event.index)
        if isinstance(event, DecodeFinished):
            return leaves
    raise AssertionError("the reply did not finish its body")


# -- requests --------------------------------------------------------------------------


def test_unknown_hashes_get_not_found(source: Path, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with start_provider([source]) as running, client(running.ticket) as connection:
            for _ in range(50):
                reply = await raw_request(connection, get_payload(RNG.randbytes(32), [(0, 1)]))
                assert reply == Reply(bytes([wire.STATUS_NOT_FOUND]))
            await _honest_fetch_is_exact(running, tmp_path / "out")

    asyncio.run(scenario())


# (ranges, what the sender must do): "reset", or "ok" (with the leaves proved).
RANGE_CASES: dict[str, tuple[list[tuple[int, int]], str | list[int]]] = {
    "whole-blob": ([(0, 2**62)], [0, 1, 2, 3, 4, 5]),
    "start-beyond-the-end": ([(1000, 2000)], []),
    "last-possible-leaf": ([(2**62 - 1, 2**62)], []),
    "sparse": ([(1, 2), (3, 4), (5, 2**62)], [1, 3, 5]),
    "one-leaf-per-range": ([(i, i + 1) for i in range(0, 2048, 2)], [0, 2, 4]),
    "at-2-62": ([(2**62, 2**62 + 1)], "reset"),
    "u64-max": ([(2**64 - 2, 2**64 - 1)], "reset"),
    "reversed": ([(5, 2)], "reset"),
    "empty-range": ([(3, 3)], "reset"),
    "overlapping": ([(0, 5), (3, 8)], "reset"),
    "touching": ([(0, 2), (2, 4)], "reset"),
    "unsorted": ([(4, 5), (0, 1)], "reset"),
    "no-ranges": ([], "reset"),
    "too-many-ranges": ([(i, i + 1) for i in range(0, 2 * 1025, 2)], "reset"),
}


@pytest.mark.parametrize("case", list(RANGE_CASES))
def test_absurd_ranges(source: Path, tmp_path: Path, case: str) -> None:
    ranges, expected = RANGE_CASES[case]

    async def scenario() -> None:
        async with start_provider([source]) as running, client(running.ticket) as connection:
            root = _blob_root(running, "src/big.bin")
            reply = await raw_request(connection, get_payload(root, ranges))
            if expected == "reset":
                assert reply == Reply(reset_code=wire.ERROR_BAD_REQUEST)
            else:
                assert _verify(root, tuple(ranges), reply) == expected
            await _honest_fetch_is_exact(running, tmp_path / "out")

    asyncio.run(scenario())


MALFORMED: dict[str, bytes] = {
    "empty": b"",
    "unknown-kind": b"\x07" + bytes(40),
    "truncated-get": get_payload(bytes(32), [(0, 1)])[:20],
    "count-says-3-has-1": get_payload(bytes(32), [(0, 1)])[:33] + b"\x00\x03" + bytes(16),
    "done-too-long": b"\x02" + bytes(9),
    "done-too-short": b"\x02\x00",
    "oversized": b"\x01" + bytes(100 * 1024),
}


def test_malformed_requests_are_reset(source: Path, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with start_provider([source]) as running, client(running.ticket) as connection:
            for name, payload in MALFORMED.items():
                reply = await raw_request(connection, payload)
                assert reply == Reply(reset_code=wire.ERROR_BAD_REQUEST), name
            await _honest_fetch_is_exact(running, tmp_path / "out")

    asyncio.run(scenario())


def test_requests_that_never_finish_are_timed_out_and_capped(source: Path, tmp_path: Path) -> None:
    """Slow requests hold at most max_requests_per_connection slots, and only
    for request_timeout_s; a request over the cap is reset at once."""
    limits = ProviderLimits(request_timeout_s=3.0, max_requests_per_connection=4)

    async def scenario() -> None:
        async with start_provider([source], limits) as running, client(running.ticket) as conn:
            root = _blob_root(running, "src/big.bin")
            payload = get_payload(root, [(0, 1)])
            holders = [
                asyncio.ensure_future(raw_request(conn, payload[:5], finish=False))
                for _ in range(4)
            ]
            await asyncio.sleep(0.3)  # let the sender take them
            over_cap = await raw_request(conn, payload)
            assert over_cap == Reply(reset_code=wire.ERROR_BAD_REQUEST)
            for reply in await asyncio.gather(*holders):
                assert reply == Reply(reset_code=wire.ERROR_BAD_REQUEST)
            # The slots are free again on the same connection.
            assert _verify(root, ((0, 1),), await raw_request(conn, payload)) == [0]
            await _honest_fetch_is_exact(running, tmp_path / "out")

    asyncio.run(scenario())


def test_thousands_of_streams_at_once(source: Path, tmp_path: Path) -> None:
    """2000 requests at once on one connection: QUIC admits 128 open streams,
    the sender works on at most MAX_REQUESTS_PER_CONNECTION and resets the
    rest; every answer is either a valid body or that reset."""

    async def scenario() -> None:
        async with start_provider([source]) as running, client(running.ticket) as connection:
            root = _blob_root(running, "src/sub/small.txt")
            payload = get_payload(root, [(0, 2**62)])
            replies = await asyncio.wait_for(
                asyncio.gather(*(raw_request(connection, payload) for _ in range(2000))),
                STEP_TIMEOUT_S * 2,
            )
            served = [reply for reply in replies if reply.reset_code is None]
            refused = [reply for reply in replies if reply.reset_code is not None]
            assert {reply.reset_code for reply in refused} <= {wire.ERROR_BAD_REQUEST}
            assert served and refused
            for reply in served:
                assert _verify(root, ALL, reply) == [0]
            await _honest_fetch_is_exact(running, tmp_path / "out")

    asyncio.run(scenario())


# -- connections -------------------------------------------------------------------------


def test_flood_of_idle_connections(source: Path, tmp_path: Path) -> None:
    """200 handshakes that then sit idle: the sender keeps at most
    MAX_RECEIVER_CONNECTIONS, closing the idlest, and an honest receiver that
    arrives after the flood is served."""
    flood_size = 200

    async def scenario() -> None:
        async with start_provider([source]) as running:
            flood = await Endpoint.bind(
                IMPOSTOR_KEY, EndpointConfig(path_policy=PathPolicy.DIRECT_ONLY)
            )
            try:
                node_id = NodeId(running.ticket.node_id)
                address = list(running.ticket.addresses)
                gate = asyncio.Semaphore(16)

                async def connect_one() -> object:
                    async with gate:
                        return await flood.connect(node_id, address, timeout_s=STEP_TIMEOUT_S)

                connections = await asyncio.gather(*(connect_one() for _ in range(flood_size)))
                await _honest_fetch_is_exact(running, tmp_path / "out")
                room = [
                    event
                    for event in running.events
                    if isinstance(event, events.ReceiverFailed) and "make room" in event.reason
                ]
                assert len(room) >= flood_size + 1 - MAX_RECEIVER_CONNECTIONS
                assert len(connections) == flood_size
            finally:
                await flood.close()

    asyncio.run(scenario())


def test_new_connection_is_refused_when_every_one_is_busy(source: Path, tmp_path: Path) -> None:
    """Two connections each hold a request in progress (max 2): a third is
    closed at once rather than evicting a busy one."""
    limits = ProviderLimits(request_timeout_s=10.0, max_connections=2)

    async def scenario() -> None:
        async with start_provider([source], limits) as running:
            async with client(running.ticket) as first, client(running.ticket) as second:
                holders = [
                    asyncio.ensure_future(raw_request(conn, b"\x01", finish=False))
                    for conn in (first, second)
                ]
                await asyncio.sleep(0.3)
                with pytest.raises(ConnectionLostError) as caught:
                    await fetch(running.ticket, tmp_path / "out")
                assert caught.value.exit_code == EXIT_UNREACHABLE
                for holder in holders:
                    holder.cancel()
                await asyncio.gather(*holders, return_exceptions=True)
            # Once they are gone, the receiver is served (its retry covers the
            # moment the sender takes to see them go).
            await fetch(running.ticket, tmp_path / "out2", retry_for_s=5.0)
            assert final_files(tmp_path / "out2") == _expected()

    asyncio.run(scenario())


def test_a_strangers_done_does_not_end_send_once(source: Path, tmp_path: Path) -> None:
    """DONE from a connection that fetched nothing (it does not know the
    ticket's hashes) is answered but does not stop `send --once`."""

    async def scenario() -> None:
        async with start_provider([source], once=True) as running:
            async with client(running.ticket, IMPOSTOR_KEY) as stranger:
                reply = await raw_request(stranger, wire.encode_request(wire.DoneRequest(0)))
                assert reply == Reply(bytes([wire.STATUS_OK]))
            await asyncio.sleep(0.2)
            assert not running.serving.done()
            await _honest_fetch_is_exact(running, tmp_path / "out")
            await asyncio.wait_for(running.serving, STEP_TIMEOUT_S)

    asyncio.run(scenario())


def _send_initials(address: tuple[str, int], count: int) -> list[socket.socket]:
    """``count`` QUIC client Initials to ``address``, each from its own socket,
    never followed up: half-open handshakes (about 1.2 KB each)."""
    sockets = []
    for _ in range(count):
        quic = QuicConnection(
            configuration=QuicConfiguration(
                is_client=True, alpn_protocols=[ALPN], verify_mode=ssl.CERT_NONE
            )
        )
        quic.connect(address, now=time.monotonic())
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        for datagram, _ in quic.datagrams_to_send(now=time.monotonic()):
            sock.sendto(datagram, address)
    return sockets


def test_half_open_handshake_flood_does_not_lock_out_receivers(
    source: Path, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with start_provider([source]) as running:
            sockets = _send_initials(running.ticket.addresses[0], 80)
            try:
                await asyncio.sleep(0.2)
                await fetch(running.ticket, tmp_path / "out", connect_timeout_s=3.0)
                assert final_files(tmp_path / "out") == _expected()
            finally:
                for sock in sockets:
                    sock.close()

    asyncio.run(scenario())
