"""Named limits and defaults shared across layers, each with its reason."""

from __future__ import annotations

# How long the receiver tries the ticket's addresses before giving up (exit 3).
# Long enough for a slow handshake across continents plus a retransmission or two.
CONNECT_TIMEOUT_S = 15.0

# Files fetched at once over parallel streams. Enough to hide the per-file
# round trip for many small files; more streams add no speed on one core
# (FACTS.md: several streams in one process do not add throughput).
FETCH_CONCURRENCY = 8

# The manifest is kept in memory and parsed at once; 256 MiB is about two
# million entries with long paths, far beyond any real folder.
MAX_MANIFEST_BYTES = 256 * 1024 * 1024

# A request is tiny; anything larger is a hostile peer.
MAX_REQUEST_BYTES = 64 * 1024

# Read size when hashing files on import: large enough that per-call
# overhead vanishes (FACTS.md: >= 64 KiB pieces cost nothing), small enough
# to stay in cache.
IMPORT_READ_BYTES = 4 * 1024 * 1024

# Progress lines in --json output at most this often, so scripts are not flooded.
JSON_PROGRESS_INTERVAL_S = 0.25

# The name of the hidden folder inside the output folder that holds data not
# yet verified. Nothing in it is ever a final file.
PARTIAL_DIR_PREFIX = ".p2pcp-partial-"
