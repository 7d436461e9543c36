"""Writing a message to a websockets connection without a task switch.

websockets' ``send()`` is a coroutine; calling it from a callback means a
task (or a queue and a writer task) per message, and every task switch adds
latency to each hop through the relay, which QUIC sees as round-trip time.
When nothing is queued and the socket keeps up, ``write_now`` hands the
frame to the connection's sans-IO protocol and its transport directly, as
``send()`` itself does before it waits for the buffer to drain. Callers keep
their queue and writer task for the rest, so order is kept and memory stays
bounded: ``write_now`` refuses (returns False) when the connection is not
open or its write buffer is above ``write_limit``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from websockets.asyncio.connection import Connection


def write_now(connection: Connection, message: bytes, write_limit: int) -> bool:
    """Write one binary message now; False (nothing written) if it must wait."""
    from websockets.protocol import State

    transport = connection.transport
    if (
        connection.protocol.state is not State.OPEN
        or transport.is_closing()
        or transport.get_write_buffer_size() > write_limit
    ):
        return False
    connection.protocol.send_binary(message)
    connection.send_data()
    return True
