"""The LAN rendezvous (rendezvous/lan.py) on loopback: real multicast DNS, real TCP.

Everything runs on 127.0.0.1 (``LanConfig(interface=...)``), so no packet
leaves the machine. Announcer and browser are two zeroconf instances in one
process, as two hosts would be. Hostile peers are raw TCP ends speaking the
framing by hand: an oversized frame, too many frames, silence, a stray
connection, and a host that announces a nameplate and answers nonsense.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from p2pcp.core.errors import CodeError, ConfigError, ConnectError, LocalProtocolError
from p2pcp.rendezvous.lan import (
    ANSWER_OK,
    MAX_FRAME_BYTES,
    MAX_FRAMES,
    NAMEPLATE_RANGE,
    SERVICE_TYPE,
    LanChannel,
    LanConfig,
    LanRendezvous,
    announce,
    claim_message,
    encode_frame,
    find,
    lan_settings,
    service_name,
)

LOOPBACK = LanConfig(interface="127.0.0.1", find_timeout_s=3.0)
# A bound on every test's event loop: a hang fails instead of waiting forever.
TEST_BOUND_S = 60.0


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(main(), TEST_BOUND_S)

    asyncio.run(bounded())


async def announced_port(nameplate: int) -> tuple[int, AsyncServiceInfo]:
    """Resolve the announcement as any LAN host would; return its port and record."""
    zeroconf = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        info = AsyncServiceInfo(SERVICE_TYPE, service_name(nameplate))
        assert await info.async_request(zeroconf.zeroconf, 3000)
    finally:
        await zeroconf.async_close()
    assert info.port
    return info.port, info


async def raw_claim(nameplate: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A hand-made receiver: connect to the announced port and claim nameplate."""
    port, _ = await announced_port(nameplate)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode_frame(claim_message(nameplate)))
    await writer.drain()
    assert await read_frame(reader) == ANSWER_OK
    return reader, writer


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">H", await reader.readexactly(2))
    return await reader.readexactly(size)


async def closing(*channels: LanChannel) -> None:
    for channel in channels:
        await channel.close()


def test_a_sender_and_a_receiver_find_each_other_and_talk_both_ways() -> None:
    async def main() -> None:
        sender = await announce(LOOPBACK)
        try:
            assert sender.nameplate in NAMEPLATE_RANGE
            # Sent before anyone claims: kept, and delivered in order after the claim.
            await sender.send(b"first")
            await sender.send(b"second")
            assert not sender.is_claimed
            receiver = await find(LOOPBACK, sender.nameplate)
            try:
                assert receiver.is_claimed
                assert await receiver.receive(5) == b"first"
                assert await receiver.receive(5) == b"second"
                await receiver.send(b"x" * MAX_FRAME_BYTES)
                assert await sender.receive(5) == b"x" * MAX_FRAME_BYTES
                assert sender.is_claimed
                await sender.send(b"third")
                assert await receiver.receive(5) == b"third"
            finally:
                await receiver.close()
            # The receiver hung up: the sender hears a closed channel, not silence.
            with pytest.raises(CodeError, match="closed the LAN connection"):
                await sender.receive(5)
        finally:
            await sender.close()
        with pytest.raises(CodeError, match="closed"):
            await sender.receive(1)

    run(main)


def test_the_announcement_holds_the_nameplate_a_port_and_addresses_only() -> None:
    async def main() -> None:
        sender = await announce(LOOPBACK)
        try:
            port, info = await announced_port(sender.nameplate)
            assert info.name == f"{sender.nameplate}._p2pcp-code._tcp.local."
            assert 0 < port < 65536
            assert info.parsed_addresses(IPVersion.V4Only) == ["127.0.0.1"]
            assert info.properties == {}
            # The record's server is a random name, not this machine's host name.
            assert info.server is not None and info.server.startswith("p2pcp-")
        finally:
            await sender.close()
        # Closed: the nameplate is withdrawn, and a receiver says nobody has it.
        quick = LanConfig(interface="127.0.0.1", find_timeout_s=1.0)
        with pytest.raises(CodeError, match=f"announces nameplate {sender.nameplate} "):
            await find(quick, sender.nameplate)

    run(main)


def test_nobody_announcing_the_nameplate_is_a_code_error_after_the_bounded_wait() -> None:
    async def main() -> None:
        quick = LanConfig(interface="127.0.0.1", find_timeout_s=0.5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(CodeError, match="no sender on this LAN announces nameplate 99999"):
            await find(quick, 99999)
        assert loop.time() - started < 10

    run(main)


def test_one_exchange_per_nameplate_a_second_claim_is_refused() -> None:
    async def main() -> None:
        sender = await announce(LOOPBACK)
        receiver = await find(LOOPBACK, sender.nameplate)
        try:
            with pytest.raises(CodeError, match="code already used"):
                await find(LOOPBACK, sender.nameplate)
            # The first receiver still holds the channel.
            await receiver.send(b"still here")
            assert await sender.receive(5) == b"still here"
        finally:
            await closing(receiver, sender)

    run(main)


def test_a_nameplate_another_host_announces_cannot_be_announced_again() -> None:
    async def main() -> None:
        first = await announce(LOOPBACK)
        try:
            with pytest.raises(CodeError, match=f"already announces nameplate {first.nameplate}"):
                await announce(LOOPBACK, first.nameplate)
            # Without a chosen nameplate, the sender moves to a free one.
            second = await announce(LOOPBACK)
            try:
                assert second.nameplate != first.nameplate
            finally:
                await second.close()
        finally:
            await first.close()

    run(main)


def test_a_connection_that_does_not_claim_the_nameplate_does_not_burn_it() -> None:
    async def main() -> None:
        sender = await announce(LOOPBACK)
        try:
            port, _ = await announced_port(sender.nameplate)
            # A claim for another nameplate, then junk that is no frame at all.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(encode_frame(claim_message(sender.nameplate + 1)))
            await writer.drain()
            assert await reader.read() == b""  # closed without an answer
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"\xff\xffGET / HTTP/1.0\r\n\r\n")
            await writer.drain()
            assert await reader.read() == b""
            writer.close()
            receiver = await find(LOOPBACK, sender.nameplate)
            await receiver.send(b"hello")
            assert await sender.receive(5) == b"hello"
            await receiver.close()
        finally:
            await sender.close()

    run(main)


def test_an_oversized_frame_is_a_clear_code_error() -> None:
    async def main() -> None:
        sender = await announce(LOOPBACK)
        try:
            _, writer = await raw_claim(sender.nameplate)
            writer.write(struct.pack(">H", MAX_FRAME_BYTES + 1) + b"x" * (MAX_FRAME_BYTES + 1))
            await writer.drain()
            with pytest.raises(CodeError, match=f"4097-byte message .*at most {MAX_FRAME_BYTES}"):
                await sender.receive(5)
            writer.close()
        finally:
            await sender.close()

    run(main)


def test_too_many_frames_are_a_clear_code_error() -> None:
    async def main() -> None:
        sender = await announce(LOOPBACK)
        try:
            _, writer = await raw_claim(sender.nameplate)
            for number in range(MAX_FRAMES + 1):
                writer.write(encode_frame(b"%d" % number))
            await writer.drain()
            # The claim was one frame: MAX_FRAMES - 1 messages arrive, then the error.
            for number in range(MAX_FRAMES - 1):
                assert await sender.receive(5) == b"%d" % number
            with pytest.raises(CodeError, match=f"more than {MAX_FRAMES} messages"):
                await sender.receive(5)
            writer.close()
        finally:
            await sender.close()

    run(main)


def test_silence_is_a_connect_error_after_the_timeout_and_the_channel_still_works() -> None:
    async def main() -> None:
        sender = await announce(LOOPBACK)
        try:
            # Nobody claimed yet.
            with pytest.raises(ConnectError, match="no one on the LAN claimed"):
                await sender.receive(0.3)
            receiver = await find(LOOPBACK, sender.nameplate)
            with pytest.raises(ConnectError, match=r"sent nothing over the LAN for 0\.3 s"):
                await receiver.receive(0.3)
            # A timeout never cuts a message: the next one arrives whole.
            await sender.send(b"late")
            assert await receiver.receive(5) == b"late"
            await receiver.close()
        finally:
            await sender.close()

    run(main)


def test_messages_over_the_bounds_are_refused_before_they_are_sent() -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame(b"")
    with pytest.raises(LocalProtocolError):
        encode_frame(b"x" * (MAX_FRAME_BYTES + 1))

    async def main() -> None:
        sender = await announce(LOOPBACK)
        try:
            with pytest.raises(LocalProtocolError):
                await sender.send(b"x" * (MAX_FRAME_BYTES + 1))
            for _ in range(MAX_FRAMES):
                await sender.send(b"m")
            with pytest.raises(LocalProtocolError):
                await sender.send(b"m")
        finally:
            await sender.close()

    run(main)


async def hostile_announcer(
    nameplate: int, behave: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
) -> Callable[[], Awaitable[None]]:
    """A LAN host that announces nameplate and runs behave on each connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await behave(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    zeroconf = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    info = AsyncServiceInfo(
        SERVICE_TYPE,
        service_name(nameplate),
        port=server.sockets[0].getsockname()[1],
        parsed_addresses=["127.0.0.1"],
        server="hostile.local.",
    )
    await zeroconf.async_register_service(info)

    async def stop() -> None:
        server.close()
        await zeroconf.async_unregister_service(info)
        await zeroconf.async_close()

    return stop


def test_a_host_that_answers_nonsense_or_floods_the_receiver_gets_a_code_error() -> None:
    async def not_a_sender(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader)
        writer.write(encode_frame(b"welcome"))
        await writer.drain()

    async def oversized(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader)
        writer.write(encode_frame(ANSWER_OK) + b"\xff\xff" + b"x" * 65535)
        await writer.drain()

    async def main() -> None:
        stop = await hostile_announcer(90001, not_a_sender)
        try:
            with pytest.raises(CodeError, match="not a p2pcp sender"):
                await find(LOOPBACK, 90001)
        finally:
            await stop()
        stop = await hostile_announcer(90002, oversized)
        try:
            receiver = await find(LOOPBACK, 90002)
            with pytest.raises(CodeError, match="65535-byte message"):
                await receiver.receive(5)
            await receiver.close()
        finally:
            await stop()

    run(main)


def test_an_announced_sender_that_does_not_listen_is_a_connect_error() -> None:
    async def main() -> None:
        async def nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            return None

        stop = await hostile_announcer(90003, nothing)
        # Find the port, then stop listening but keep the record (a crashed sender).
        port, _ = await announced_port(90003)
        probe = await asyncio.open_connection("127.0.0.1", port)
        probe[1].close()
        await stop()
        zeroconf = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        info = AsyncServiceInfo(
            SERVICE_TYPE,
            service_name(90004),
            port=port,
            parsed_addresses=["127.0.0.1"],
            server="gone.local.",
        )
        await zeroconf.async_register_service(info)
        try:
            with pytest.raises(ConnectError, match=f"does not answer at 127.0.0.1:{port}"):
                await find(LOOPBACK, 90004)
        finally:
            await zeroconf.async_unregister_service(info)
            await zeroconf.async_close()

    run(main)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, LanConfig()),
        ("on", LanConfig()),
        ("OFF", None),
        ("127.0.0.1", LanConfig(interface="127.0.0.1")),
    ],
)
def test_the_lan_setting_picks_every_interface_one_or_none(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str | None, expected: LanConfig | None
) -> None:
    monkeypatch.setenv("P2PCP_HOME", str(tmp_path))
    if text is None:
        monkeypatch.delenv("P2PCP_LAN", raising=False)
    else:
        monkeypatch.setenv("P2PCP_LAN", text)
    assert lan_settings() == expected


def test_a_bad_lan_setting_names_its_source(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("P2PCP_HOME", str(tmp_path))
    monkeypatch.setenv("P2PCP_LAN", "eth0")
    with pytest.raises(ConfigError, match="P2PCP_LAN: lan must be"):
        lan_settings()
    monkeypatch.delenv("P2PCP_LAN")
    (tmp_path / "config.toml").write_text('lan = "off"\n')
    assert lan_settings() is None
    (tmp_path / "config.toml").write_text("lan = 1\n")
    with pytest.raises(ConfigError, match=r"config\.toml: lan must be a string"):
        lan_settings()


def test_the_lan_rendezvous_gives_a_new_announced_nameplate_each_time() -> None:
    async def main() -> None:
        rendezvous = LanRendezvous(LOOPBACK)
        first = await rendezvous.allocate(30)
        second = await rendezvous.allocate(30)
        try:
            assert first.nameplate != second.nameplate
            receiver = await find(LOOPBACK, second.nameplate)
            await receiver.send(b"to the second")
            assert await second.receive(5) == b"to the second"
            await receiver.close()
        finally:
            await closing(first, second)
            await rendezvous.close()

    run(main)


def test_the_lan_rendezvous_announces_a_requested_nameplate_once() -> None:
    """``send --code 42-crossbow-puzzle`` on the LAN: nameplate 42 itself; a
    second sender asking for it while it is announced hears so."""

    async def main() -> None:
        rendezvous = LanRendezvous(LOOPBACK)
        first = await rendezvous.allocate(30, 42)
        try:
            assert first.nameplate == 42
            with pytest.raises(CodeError, match="already announces nameplate 42: choose another"):
                await LanRendezvous(LOOPBACK).allocate(30, 42)
            receiver = await find(LOOPBACK, 42)
            await receiver.send(b"to 42")
            assert await first.receive(5) == b"to 42"
            await receiver.close()
        finally:
            await closing(first)
            await rendezvous.close()

    run(main)


def test_closing_the_sender_ends_a_receive_that_waits_for_the_claim() -> None:
    async def main() -> None:
        sender = await announce(LOOPBACK)
        waiting = asyncio.create_task(sender.receive(30))
        await asyncio.sleep(0.1)
        await sender.close()
        with pytest.raises(CodeError, match="channel is closed"):
            await waiting
        assert not sender.is_claimed

    run(main)
