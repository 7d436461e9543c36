"""Named limits and defaults shared across layers, each with its reason."""

from __future__ import annotations

# How long the receiver tries the ticket's addresses before giving up (exit 3).
# Long enough for a slow handshake across continents plus a retransmission or two.
CONNECT_TIMEOUT_S = 15.0

# Files fetched at once over parallel streams. Enough to hide the per-file
# round trip for many small files; more streams add no speed, because one
# event loop's per-packet work is the limit whatever the stream count.
FETCH_CONCURRENCY = 8

# Read size when hashing files on import: large enough that per-call
# overhead (~1 us per blake3 update) vanishes, small enough to stay in cache.
IMPORT_READ_BYTES = 4 * 1024 * 1024

# Progress lines in --json output at most this often, so scripts are not flooded.
JSON_PROGRESS_INTERVAL_S = 0.25

# The name of the hidden folder inside the output folder that holds data not
# yet verified. Nothing in it is ever a final file.
PARTIAL_DIR_PREFIX = ".p2pcp-partial-"

# A connection lost mid-transfer is retried this long (--retry-for): long
# enough to ride out a Wi-Fi roam, a router reboot or a sender restart.
RETRY_FOR_S = 60.0
# Backoff between reconnection attempts: fast first, then no more than one
# attempt every 8 s (each attempt itself waits up to CONNECT_TIMEOUT_S).
RETRY_FIRST_DELAY_S = 0.5
RETRY_MAX_DELAY_S = 8.0

# A response that yields no verified leaf (256 KiB) for this long is given
# up and retried (resuming, so a false alarm costs one reconnection): a
# trickling sender keeps QUIC from ever idling out, and after a long outage
# a connection whose peer already forgot it can look alive. At 30 s only a
# path slower than ~9 KB/s trips it.
PROGRESS_TIMEOUT_S = 30.0

# -- the sender against hostile receivers (transfer/provider.py) --------------
# Anyone who can reach the sender's port can open a connection; only the
# ticket's hashes get data. These bound what a connection costs the sender.

# A request stream must deliver its whole request (at most ~16 KiB, which an
# honest receiver writes at once) within this time, or the sender resets it.
# Far longer than a request needs even when its packets are lost and resent
# a few times over a bad path, short enough that a peer cannot hold request
# slots open forever.
REQUEST_READ_TIMEOUT_S = 20.0

# Requests one connection may have in progress at once; a stream beyond that
# is reset at once, before its request is read. An honest receiver uses
# FETCH_CONCURRENCY streams plus DONE; 4x that leaves room for other
# receivers' choices while keeping a connection's work (tasks, open files,
# send buffers of up to 8 MiB each) bounded.
MAX_REQUESTS_PER_CONNECTION = 32

# Receiver connections served at once. Issue 4 asks for 20 receivers of one
# folder at once; 64 is three times that. A new connection beyond it closes
# the connection that has been idle longest (no request in progress), so a
# flood of idle connections cannot lock out a receiver that is fetching; if
# every connection is busy, the new one is closed.
MAX_RECEIVER_CONNECTIONS = 64
