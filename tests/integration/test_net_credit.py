"""Receive windows follow the reader, over real UDP on loopback (credit.py).

Two Endpoints in one event loop. The server answers with far more than the
receive windows; the client first reads nothing, then reads slowly. What
the client holds unread must stay within its stream window, the server's
writes must stop while nobody reads, and every byte must arrive once the
client reads.
"""

from __future__ import annotations

import asyncio
import hashlib
import os

from p2pcp.net.quic.configuration import MAX_STREAM_DATA_BYTES
from tests.support.aio import run_bounded
from tests.support.pairs import address_of, endpoint_pair

TEST_TIMEOUT_S = 60.0
MIB = 1024 * 1024
ANSWER_BYTES = 96 * MIB
WRITE_BYTES = MIB
# The server's writes count as stopped once they made no progress this long.
STALL_S = 0.5
# The slow reader: this much per read, then a pause (well below loopback speed).
SLOW_READ_BYTES = 256 * 1024
SLOW_PAUSE_S = 0.004


def test_a_reader_that_does_not_read_stops_the_sender_and_reading_resumes_it() -> None:
    block = os.urandom(WRITE_BYTES)
    expected = hashlib.sha256(block * (ANSWER_BYTES // WRITE_BYTES)).digest()

    async def body() -> None:
        async with endpoint_pair() as (server, client):
            written = 0

            async def serve() -> None:
                nonlocal written
                connection = await server.accept()
                stream = await connection.accept_stream()
                await stream.read_exactly(3)
                for _ in range(ANSWER_BYTES // WRITE_BYTES):
                    await stream.write(block)
                    written += WRITE_BYTES
                await stream.finish()

            serving = asyncio.ensure_future(serve())
            try:
                connection = await client.connect(server.node_id, [address_of(server)], timeout_s=5)
                stream = await connection.open_stream()
                await stream.write(b"GET")
                await stream.finish()

                # nobody reads: the server's writes stop, the client holds a window at most
                last = -1
                while written != last:
                    last = written
                    await asyncio.sleep(STALL_S)
                    assert stream.queued_bytes <= MAX_STREAM_DATA_BYTES
                assert written < ANSWER_BYTES // 2
                assert stream.queued_bytes > 0

                # a slow reader: the transfer completes, still within the window
                digest = hashlib.sha256()
                received = 0
                highest_queued = 0
                while True:
                    highest_queued = max(highest_queued, stream.queued_bytes)
                    chunk = await stream.read()
                    if not chunk:
                        break
                    digest.update(chunk)
                    received += len(chunk)
                    if received % SLOW_READ_BYTES < len(chunk):
                        await asyncio.sleep(SLOW_PAUSE_S)
                assert received == ANSWER_BYTES
                assert digest.digest() == expected
                assert highest_queued <= MAX_STREAM_DATA_BYTES
                await serving
                await connection.close()
            finally:
                serving.cancel()

    run_bounded(body, TEST_TIMEOUT_S)
