"""The relay server's limits: each a named constant with its reason.

``RelayLimits`` holds the ones an operator may override on the command line
(``p2pcp relay --max-clients ...``); the rest are fixed. The protocol's own
limits (datagram, batch and message sizes) live in ``frames.py``.

Worst-case memory of a relay is about ``max_clients x (MAX_QUEUE_BYTES +
WRITE_LIMIT_BYTES + RECEIVE_QUEUE_MESSAGES x frames.MAX_MESSAGE_BYTES)``,
~10 MiB per client; an idle client costs a few tens of KiB
(``tests/integration/test_relay_process.py`` measures 1,000 idle clients).
The mailbox adds at most ``max_nameplates x MAILBOX_QUEUE_BYTES`` (160 MiB
at the defaults, 128 KiB per client) of waiting messages.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pcp.core.config import DEFAULT_RELAY_PORT
from p2pcp.core.errors import UsageError

DEFAULT_PORT = DEFAULT_RELAY_PORT

# Each client is one TCP connection (a file descriptor) and a few tens of
# KiB when idle; 10,000 fit a small VM. Connections still logging in count.
MAX_CLIENTS = 10_000
# Datagrams a client may send per second. One relayed QUIC connection moves
# ~1.6 GB/s at 16,000-byte datagrams or ~120 MB/s at 1,200 at this rate, more
# than one Python peer produces, so it only stops a client that floods.
DATAGRAMS_PER_S = 100_000
# The token bucket holds this many seconds of the rate: a burst of a QUIC
# congestion window passes, a sustained flood does not.
RATE_BURST_S = 1.0
# A client whose dropped datagrams exceed this many seconds' worth of its
# rate, draining at this many times its rate, is flooding on purpose (a QUIC
# sender backs off long before) and is disconnected.
ABUSE_FACTOR = 10
# Messages queued for one client before new ones are dropped: a burst of
# small batches (a QUIC flight sent a datagram at a time) fits.
QUEUE_DEPTH_MESSAGES = 256
# ...and bytes queued for one client, whatever the message count: ~40 ms at
# 100 MB/s of burst absorbed, never an unbounded buffer.
MAX_QUEUE_BYTES = 4 * 1024 * 1024
# A logged-in client that sends nothing (not even a PING, which clients send
# every 15 s) for this long is gone: its NAT mapping or TCP flow is dead.
IDLE_TIMEOUT_S = 60.0
# The opening handshake plus the login must finish within this; holds back
# connections that never log in (a login is one round trip).
LOGIN_TIMEOUT_S = 10.0
# How often the idle sweeper runs (at most; a quarter of the idle timeout
# when that is shorter).
IDLE_SWEEP_INTERVAL_S = 5.0
# Waiting for a close handshake before dropping the TCP connection.
CLOSE_TIMEOUT_S = 2.0
# A PEER_GONE for one destination at most this often per client: a sender
# that keeps sending to a vanished node learns it without a frame per packet.
PEER_GONE_INTERVAL_S = 1.0
# Destinations remembered per client for that (cleared when full).
MAX_PEER_GONE_TRACKED = 256
# Senders remembered per client, told when it disconnects.
MAX_SENDERS_TRACKED = 256
# websockets' write buffer high-water mark per connection: above it the
# writer waits for the socket, and new messages queue (then drop).
WRITE_LIMIT_BYTES = 256 * 1024
# Received messages websockets buffers before it stops reading a socket.
RECEIVE_QUEUE_MESSAGES = 16
# STUN answers per second, whole server: a reflector must not be an
# amplifier (the answer is at most 2.6x a 20-byte request) for a flood.
STUN_RESPONSES_PER_S = 10_000
# Pending TCP connections the kernel holds for accept().
LISTEN_BACKLOG = 1024

# -- the mailbox (short codes' rendezvous) ---------------------------------------
# A code is read aloud and typed in minutes; an hour covers a coffee break,
# and a nameplate left behind by a vanished sender frees itself.
CODE_EXPIRY_S = 3600.0
# Nameplates open at once on the whole relay: a few hundred bytes each, so
# 10,000 is a few MiB, and a two-digit code stays two digits on a quiet relay.
MAX_NAMEPLATES = 10_000
# Nameplates one connection holds at once (as allocator or claimer): a
# person sends a few things at a time; a flood of codes from one client stops here.
NAMEPLATES_PER_CLIENT = 8
# Messages waiting in one nameplate for its other side to claim it, and their
# bytes: a PAKE exchange waits with one or two.
MAILBOX_QUEUE_MESSAGES = 16
MAILBOX_QUEUE_BYTES = 16 * 1024
# Messages one nameplate carries in its life (both sides): a PAKE exchange
# needs about six; the mailbox is not a data channel.
MAILBOX_MESSAGES_PER_NAMEPLATE = 64
# An ended nameplate is remembered this long, and not handed out again
# meanwhile, so that a second use of its code says "code already used" or
# "code expired" instead of reaching someone else's new code.
ENDED_MEMORY_S = 600.0


@dataclass(frozen=True)
class RelayLimits:
    """The limits an operator may override; defaults above."""

    max_clients: int = MAX_CLIENTS
    datagrams_per_s: int = DATAGRAMS_PER_S
    queue_depth: int = QUEUE_DEPTH_MESSAGES
    idle_timeout_s: float = IDLE_TIMEOUT_S
    login_timeout_s: float = LOGIN_TIMEOUT_S
    code_expiry_s: float = CODE_EXPIRY_S
    max_nameplates: int = MAX_NAMEPLATES
    nameplates_per_client: int = NAMEPLATES_PER_CLIENT

    def __post_init__(self) -> None:
        if self.max_clients < 1:
            raise UsageError("--max-clients must be at least 1")
        if self.datagrams_per_s < 1:
            raise UsageError("--datagrams-per-second must be at least 1")
        if self.queue_depth < 1:
            raise UsageError("--queue-depth must be at least 1")
        if not self.idle_timeout_s > 0:
            raise UsageError("--idle-timeout must be more than 0 seconds")
        if not self.login_timeout_s > 0:
            raise UsageError("--login-timeout must be more than 0 seconds")
        if not self.code_expiry_s > 0:
            raise UsageError("--code-expiry must be more than 0 seconds")
        if self.max_nameplates < 1:
            raise UsageError("--max-codes must be at least 1")
        if self.nameplates_per_client < 1:
            raise UsageError("--codes-per-client must be at least 1")

    @property
    def burst_datagrams(self) -> float:
        """The token bucket's size."""
        return max(self.datagrams_per_s * RATE_BURST_S, 64.0)
