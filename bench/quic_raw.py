"""Raw QUIC throughput on loopback: stock aioquic against p2pcp's net layer.

Moves --size bytes (default 1 GiB) server -> client on one stream, with the
server in a child process and the client in this one (as the CLI runs them:
two processes, so each side has a core when there are two). Prints MB/s for

  (a) stock aioquic: asyncio connect()/serve(), default settings (baseline)
  (b) p2pcp Endpoint capped at 1452-byte datagrams (an internet path)
  (c) p2pcp Endpoint with the probed size (16,000 on loopback)

and the ratios against (a), all measured in the same run. A benchmark, not
a test: it never fails on speed.

    python bench/quic_raw.py [--size 1G] [--runs 1] [--only a,b,c]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import ssl
import statistics
import struct
import sys
import time
from multiprocessing.connection import Connection as Pipe
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CHUNK_BYTES = 1024 * 1024
STOCK_HIGH_WATER_BYTES = 4 * 1024 * 1024
SERVER_SEED = bytes(range(32))
CLIENT_SEED = bytes(range(1, 33))


def parse_size(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


# -- (a) stock aioquic ------------------------------------------------------


def stock_server(pipe: Pipe) -> None:
    from aioquic.asyncio import serve
    from aioquic.quic.configuration import QuicConfiguration

    from p2pcp.net.quic.identity import make_certificate

    async def main() -> None:
        cert, key = make_certificate(SERVER_SEED)
        config = QuicConfiguration(is_client=False, alpn_protocols=["bench"])
        config.certificate = cert
        config.private_key = key
        done = asyncio.Event()
        tasks: set[asyncio.Future[None]] = set()

        def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            async def serve_one() -> None:
                size = struct.unpack("!Q", await reader.readexactly(8))[0]
                chunk = b"x" * CHUNK_BYTES
                transport = writer.transport
                protocol = transport.protocol  # type: ignore[attr-defined]
                stream_id = transport.stream_id  # type: ignore[attr-defined]
                sent = 0
                while sent < size:
                    piece = chunk if size - sent >= CHUNK_BYTES else chunk[: size - sent]
                    writer.write(piece)
                    sent += len(piece)
                    # stock aioquic has no write backpressure: poll its buffer
                    while True:
                        stream = protocol._quic._streams.get(stream_id)
                        if stream is None:
                            break
                        sender = stream.sender
                        if sender._buffer_stop - sender._buffer_start <= STOCK_HIGH_WATER_BYTES:
                            break
                        await asyncio.sleep(0.0005)
                writer.write_eof()
                done.set()

            tasks.add(asyncio.ensure_future(serve_one()))

        server = await serve("127.0.0.1", 0, configuration=config, stream_handler=handler)
        port = server._transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
        pipe.send(port)
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
        server.close()

    asyncio.run(main())


async def stock_client(port: int, size: int) -> float:
    from aioquic.asyncio import connect
    from aioquic.quic.configuration import QuicConfiguration

    config = QuicConfiguration(is_client=True, alpn_protocols=["bench"], verify_mode=ssl.CERT_NONE)
    async with connect("127.0.0.1", port, configuration=config) as client:
        reader, writer = await client.create_stream()
        start = time.perf_counter()
        writer.write(struct.pack("!Q", size))
        got = 0
        while True:
            data = await reader.read(1 << 20)
            if not data:
                break
            got += len(data)
        elapsed = time.perf_counter() - start
    if got != size:
        raise RuntimeError(f"stock: got {got} of {size} bytes")
    return elapsed


# -- (b), (c) p2pcp Endpoint ------------------------------------------------


def endpoint_server(pipe: Pipe, cap: int | None) -> None:
    from p2pcp.core.identity import SecretKey
    from p2pcp.net import Endpoint, EndpointConfig

    async def main() -> None:
        endpoint = await Endpoint.bind(
            SecretKey(SERVER_SEED), EndpointConfig(max_datagram_size=cap)
        )
        pipe.send(endpoint.local_port)

        async def serve() -> None:
            while True:
                connection = await endpoint.accept()
                stream = await connection.accept_stream()
                size = struct.unpack("!Q", await stream.read_exactly(8))[0]
                chunk = b"x" * CHUNK_BYTES
                sent = 0
                while sent < size:
                    piece = chunk if size - sent >= CHUNK_BYTES else chunk[: size - sent]
                    await stream.write(piece)
                    sent += len(piece)
                await stream.finish()

        task = asyncio.ensure_future(serve())
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
        task.cancel()
        await endpoint.close()

    asyncio.run(main())


async def endpoint_client(port: int, size: int, cap: int | None) -> tuple[float, int]:
    from p2pcp.core.identity import SecretKey
    from p2pcp.net import Endpoint, EndpointConfig

    endpoint = await Endpoint.bind(SecretKey(CLIENT_SEED), EndpointConfig(max_datagram_size=cap))
    try:
        server_id = SecretKey(SERVER_SEED).public
        connection = await endpoint.connect(server_id, [("127.0.0.1", port)], timeout_s=10)
        stream = await connection.open_stream()
        start = time.perf_counter()
        await stream.write(struct.pack("!Q", size))
        got = 0
        while True:
            data = await stream.read()
            if not data:
                break
            got += len(data)
        elapsed = time.perf_counter() - start
        datagram_size = connection.max_datagram_size
        await connection.close()
    finally:
        await endpoint.close()
    if got != size:
        raise RuntimeError(f"endpoint: got {got} of {size} bytes")
    return elapsed, datagram_size


# -- driver -------------------------------------------------------------------


def run_case(case: str, size: int) -> tuple[float, str]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    if case == "a":
        proc = ctx.Process(target=stock_server, args=(child,))
    else:
        proc = ctx.Process(target=endpoint_server, args=(child, 1452 if case == "b" else None))
    proc.start()
    try:
        port = parent.recv()
        note = ""
        if case == "a":
            elapsed = asyncio.run(stock_client(port, size))
        else:
            elapsed, datagram_size = asyncio.run(
                endpoint_client(port, size, 1452 if case == "b" else None)
            )
            note = f"datagram size {datagram_size}"
    finally:
        parent.send("stop")
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    return size / elapsed / 1e6, note


LABELS = {
    "a": "(a) stock aioquic connect()/serve(), defaults",
    "b": "(b) p2pcp Endpoint, capped at 1452",
    "c": "(c) p2pcp Endpoint, probed size",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1G", help="bytes to move, e.g. 256M, 1G")
    parser.add_argument("--runs", type=int, default=1, help="runs per case (median shown)")
    parser.add_argument("--only", default="a,b,c", help="cases to run, e.g. b,c")
    args = parser.parse_args()
    size = parse_size(args.size)
    cases = [c.strip() for c in args.only.split(",") if c.strip()]
    print(
        f"moving {size / 2**20:.0f} MiB over loopback, server -> client, one stream, "
        f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}"
    )
    results: dict[str, float] = {}
    for case in cases:
        speeds = []
        note = ""
        for _ in range(args.runs):
            speed, note = run_case(case, size)
            speeds.append(speed)
        results[case] = statistics.median(speeds)
        runs = ", ".join(f"{s:.1f}" for s in speeds)
        print(f"{LABELS[case]:<48} {results[case]:8.1f} MB/s  [{runs}] {note}")
    if "a" in results:
        for case in ("b", "c"):
            if case in results:
                print(f"ratio {case}/a: {results[case] / results['a']:.2f}x")


if __name__ == "__main__":
    main()
