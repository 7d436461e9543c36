"""The files a receive placed, remembered in the hash cache at its end.

A file the receiver placed has content it verified leaf by leaf before it
renamed it into place, so the next ``receive --update`` into the same
folder (or a ``send`` of it) need not read it again. ``hashcache.py`` will
not store it on its own: its ctime is the rename's, "now", which the racy
rule refuses. So the fetcher notes each placement here (``add``: the paths
of one blob, its standard BLAKE3, and its leaf hashes when it is larger
than one leaf and they are known), and once the receive succeeded
``remember`` waits until the last placement is older than the racy margin
(once, not per file), ``lstat``s every placed path and remembers it, in one
batch.

What makes an entry sound: the stat is taken after the margin passed, so
any later write moves the file's times; and a file whose ctime is later
than the moment its placement was noted (it was written, replaced or
renamed since) is left out, as is anything that is no longer a regular
file of the manifest's size. What stays unprovable without reading is a
write by another process within the same clock tick as our own rename;
that is the racy rule's own limit, and the provider re-hashes every leaf
it serves, so such a file is refused to a receiver, never sent wrong.

Memory: about 50 bytes per placed blob (its entries are the plan's own
tuple; its BLAKE3 and time are packed): 5 MB for 100,000 files; the leaf
hashes of large files are 1/8192 of their size.
"""

from __future__ import annotations

import os
import stat
import time
from array import array
from collections.abc import Iterator
from pathlib import Path

from p2pcp.blobs.collection import Entry
from p2pcp.blobs.tree import HASH_BYTES, LEAF_SIZE, Outboard, leaf_count
from p2pcp.transfer.hashcache import RACY_MARGIN_NS, HashCache, Remembered

# Placed files are stat'ed and handed to the cache this many at a time.
REMEMBER_CHUNK = 2_000


class PlacedFiles:
    """See the module. ``add`` from the event loop as files land;
    ``remember`` (blocking: run it in a thread) once, at the end."""

    def __init__(self, *, is_on: bool = True) -> None:
        self.is_on = is_on  # off: notes nothing (a receive without the cache)
        # Three parallel columns, one row per placed blob: its entries (the
        # plan's own tuple), its BLAKE3 (32 bytes each, packed) and when its
        # placement was noted. About 50 bytes a blob: a receive's memory per
        # file is budgeted (tests/e2e/test_e2e_memory.py), and a tuple of
        # objects per file cost three times that.
        self._entries: list[tuple[Entry, ...]] = []
        self._digests = bytearray()
        self._times = array("q")
        self._leaves: dict[bytes, bytes] = {}  # root -> leaf hashes (large blobs)
        self.last_ns = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(
        self, entries: tuple[Entry, ...], blake3_hex: str, leaf_hashes: bytes | None = None
    ) -> None:
        """The blob of ``entries`` is in place at each of their paths (call
        right after the renames); ``leaf_hashes``: its tree, when known."""
        if not self.is_on:
            return
        self.last_ns = time.time_ns()
        first = entries[0]
        if leaf_hashes and first.size > LEAF_SIZE and first.root not in self._leaves:
            self._leaves[first.root] = bytes(leaf_hashes)
        self._entries.append(entries)
        self._digests += bytes.fromhex(blake3_hex)
        self._times.append(self.last_ns)

    def remember(self, cache: HashCache, out_dir: Path) -> int:
        """Wait out the racy margin, then remember each placed path that is
        still the file placed there (see the module); how many were."""
        if not self._entries or not cache.is_enabled:
            return 0
        wait_ns = self.last_ns + RACY_MARGIN_NS + 1 - time.time_ns()
        if wait_ns > 0:
            time.sleep(wait_ns / 1e9)
        count = 0
        # A chunk of files at a time: what is built to remember a file (its
        # stat and row) is several hundred bytes, so all at once would be
        # the receive's peak at 100,000 files.
        for chunk in self._chunks(out_dir):
            count += cache.remember_many(chunk)
        cache.flush()
        return count

    def _chunks(self, out_dir: Path) -> Iterator[list[Remembered]]:
        """What to remember of every placed path, REMEMBER_CHUNK at a time."""
        base = str(out_dir)
        files: list[Remembered] = []
        for number, entries in enumerate(self._entries):
            root = entries[0].root
            leaves = self._tree(entries[0])
            digest = bytes(self._digests[number * HASH_BYTES : (number + 1) * HASH_BYTES])
            placed_ns = self._times[number]
            for entry in entries:
                started_ns = time.time_ns()
                try:
                    st = os.lstat(os.path.join(base, entry.path))
                except OSError:
                    continue
                if (
                    not stat.S_ISREG(st.st_mode)
                    or st.st_size != entry.size
                    or st.st_ctime_ns > placed_ns
                ):
                    continue  # changed, replaced or gone since it was placed
                files.append(Remembered(st, root, leaves, started_ns, digest))
                if len(files) >= REMEMBER_CHUNK:
                    yield files
                    files = []
        if files:
            yield files

    def _tree(self, entry: Entry) -> bytes | None:
        """The blob's leaf hashes if known and right (None: one leaf, or not known)."""
        leaves = self._leaves.get(entry.root)
        if leaves is None or len(leaves) != leaf_count(entry.size) * HASH_BYTES:
            return None
        if Outboard.from_leaf_hashes(entry.size, leaves, None).root != entry.root:
            return None
        return leaves
