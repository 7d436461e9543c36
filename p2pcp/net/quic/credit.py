"""Receive credit: QUIC flow-control windows that follow what the reader consumed.

aioquic raises a stream's window (MAX_STREAM_DATA) and the connection's
(MAX_DATA) as data ARRIVES: it doubles a limit once half of it is used. A
reader slower than the network (verification, hashing, a slow disk) then
lets received data pile up without bound, up to most of a large file.
Here the windows move with the reader instead, so a slow reader slows the
sender rather than filling memory:

- a stream's limit is the bytes its reader has consumed plus
  ``stream_window`` (the connection's ``max_stream_data``);
- the connection's limit is the bytes consumed on all streams plus
  ``connection_window`` (its ``max_data``), where bytes that will never be
  read (a stream reset by either side, data for a stream already dropped)
  count as consumed: it is computed as the bytes received (aioquic's count,
  which includes a reset stream's final size) less those still held --
  queued for a reader (``queued``/``consumed``) or held by aioquic behind a
  gap (out of order);
- an update is due once it would raise a limit by at least
  1/``UPDATE_DIVISOR`` of its window (so a MAX_STREAM_DATA or MAX_DATA
  frame goes every few MiB, not every packet), and a limit never goes down.

Hence the receiving side holds at most ``connection_window`` bytes in all
and ``stream_window`` per stream, whatever the size of the transfer.

A reader that stops reading a stream it will read later keeps up to
``stream_window`` of the connection's window: the connection window must
exceed what streams left unread hold, or a stream the application waits on
could get no credit (configuration.py sizes it for that).

``ReceiveCredit`` is sans-IO: the caller reports what its readers did and
transmits when a method returns True (a limit was raised). It changes
nothing where aioquic's internals are not the ones it follows
(``is_active`` False: aioquic's own windows then, which never block).
"""

from __future__ import annotations

from aioquic.quic.connection import QuicConnection

from p2pcp.net._aioquic import tuning

# An update once the limit would rise by an eighth of its window: the peer
# never has less than 7/8 of a window to send into while the reader keeps
# up, and a 16 MiB stream window costs one MAX_STREAM_DATA frame per 2 MiB
# read (200 a second at 400 MB/s: nothing, next to ~25,000 packets).
UPDATE_DIVISOR = 8


def next_limit(consumed: int, window: int, advertised: int) -> int | None:
    """The limit to advertise now, or None while ``advertised`` is close enough."""
    limit = consumed + window
    if limit - advertised >= max(1, window // UPDATE_DIVISOR):
        return limit
    return None


class ReceiveCredit:
    """The receive windows of one QuicConnection (module doc for the rules).

    Inputs: ``queued(n)`` when n received bytes go to a reader's queue;
    ``consumed(stream_id, n, read_offset)`` when a reader took n bytes from
    its queue or they were dropped; ``check_connection()`` after data nobody
    will read (a dropped stream's, a reset). Each returns True when it raised
    a limit, so that a packet should go out.
    """

    def __init__(self, quic: QuicConnection) -> None:
        self._quic = quic
        self.stream_window = int(quic.configuration.max_stream_data)
        self.connection_window = int(quic.configuration.max_data)
        self.is_active = tuning.install_reader_credit(quic)
        # bytes handed to readers' queues and not yet consumed
        self.unread_bytes = 0

    def queued(self, nbytes: int) -> None:
        self.unread_bytes += nbytes

    def consumed(
        self, stream_id: int, nbytes: int, read_offset: int | None, *, check_connection: bool = True
    ) -> bool:
        """``read_offset``: how far the reader has read the stream, or None
        when it wants nothing more from it (end reached, reset, failed).
        ``check_connection`` False: the caller calls ``check_connection``
        later (while aioquic's events are drained, its count of received
        bytes is ahead of what was queued)."""
        self.unread_bytes -= nbytes
        if not self.is_active:
            return False
        is_raised = False
        if read_offset is not None:
            advertised = tuning.stream_receive_limit(self._quic, stream_id)
            if advertised is not None:
                limit = next_limit(read_offset, self.stream_window, advertised)
                if limit is not None:
                    tuning.raise_stream_receive_limit(self._quic, stream_id, limit)
                    is_raised = True
        if check_connection and self.check_connection():
            return True
        return is_raised

    def check_connection(self) -> bool:
        """Raise MAX_DATA if the bytes consumed by now call for it."""
        if not self.is_active:
            return False
        quic = self._quic
        advertised = tuning.connection_receive_limit(quic)
        released = tuning.connection_received_bytes(quic) - self.unread_bytes
        # cheap test first: out-of-order bytes only lower the limit
        if next_limit(released, self.connection_window, advertised) is None:
            return False
        released -= tuning.out_of_order_bytes(quic)
        limit = next_limit(released, self.connection_window, advertised)
        if limit is None:
            return False
        tuning.raise_connection_receive_limit(quic, limit)
        return True
