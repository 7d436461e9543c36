"""Peers of the LAN rendezvous (rendezvous/lan.py) run inside the LAN lab's hosts.

Run as ``python lan_peer.py MODE ...``; each prints JSON lines on stdout:

- ``announce``: announce a nameplate on every interface, print it, take one
  message and answer ``pong``.
- ``find NAMEPLATE``: find it, send ``ping``, print the answer.
- ``hostile NAMEPLATE CODE ADDRESS``: a LAN host (at ADDRESS) answering for someone else's
  nameplate. It announces NAMEPLATE beside its owner (as a cooperating
  responder, so multicast DNS does not refuse the name), accepts the claim as
  a sender would, and runs the code exchange as a sender with its own CODE
  and a ticket of its own; prints the exchange's final event.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import struct
import sys

from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from p2pcp.rendezvous.lan import (
    ANSWER_OK,
    SERVICE_TYPE,
    LanConfig,
    announce,
    claim_message,
    encode_frame,
    find,
    service_name,
)

# The hostile host's own ticket: what it would like the receiver to fetch.
HOSTILE_TICKET = "p2pcp" + "h" * 200
BOUND_S = 60.0


def say(**event: object) -> None:
    print(json.dumps(event), flush=True)


async def run_announce() -> None:
    channel = await announce(LanConfig())
    say(event="announced", nameplate=channel.nameplate)
    message = await channel.receive(BOUND_S)
    await channel.send(b"pong")
    say(event="received", message=message.decode())
    await asyncio.sleep(0.5)  # let the answer leave before the channel closes
    await channel.close()


async def run_find(nameplate: int) -> None:
    channel = await find(LanConfig(), nameplate)
    await channel.send(b"ping")
    say(event="received", message=(await channel.receive(BOUND_S)).decode())
    await channel.close()


async def run_hostile(nameplate: int, code_text: str) -> None:
    from p2pcp.rendezvous.codes import parse_code
    from p2pcp.rendezvous.exchange import CodeExchange

    exchange = CodeExchange(parse_code(code_text), is_sender=True, payload=HOSTILE_TICKET.encode())
    done = asyncio.get_running_loop().create_future()

    async def read_frame(reader: asyncio.StreamReader) -> bytes:
        (size,) = struct.unpack(">H", await reader.readexactly(2))
        return await reader.readexactly(size)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await read_frame(reader) != claim_message(nameplate):
            writer.close()
            return
        say(event="claimed")
        writer.write(encode_frame(ANSWER_OK))
        try:
            while True:
                for message in exchange.outgoing():
                    writer.write(encode_frame(message))
                await writer.drain()
                event = exchange.next_event()
                if event is not None:
                    done.set_result(type(event).__name__)
                    return
                exchange.receive(await read_frame(reader))
        except (asyncio.IncompleteReadError, OSError):
            done.set_result("closed")
        finally:
            await asyncio.sleep(0.5)
            writer.close()

    server = await asyncio.start_server(handle, "0.0.0.0", 0)
    zeroconf = AsyncZeroconf(ip_version=IPVersion.V4Only)
    info = AsyncServiceInfo(
        SERVICE_TYPE,
        service_name(nameplate),
        port=server.sockets[0].getsockname()[1],
        parsed_addresses=[sys.argv[4]],
        server=f"p2pcp-{secrets.token_hex(6)}.local.",
        properties={},
    )
    await zeroconf.async_register_service(info, cooperating_responders=True)
    say(event="announced", nameplate=nameplate)
    say(event="finished", result=await done)
    server.close()
    await zeroconf.async_unregister_service(info)
    await zeroconf.async_close()


def main() -> None:
    mode = sys.argv[1]
    if mode == "announce":
        coroutine = run_announce()
    elif mode == "find":
        coroutine = run_find(int(sys.argv[2]))
    else:
        coroutine = run_hostile(int(sys.argv[2]), sys.argv[3])

    async def bounded() -> None:
        await asyncio.wait_for(coroutine, BOUND_S)

    asyncio.run(bounded())


if __name__ == "__main__":
    main()
