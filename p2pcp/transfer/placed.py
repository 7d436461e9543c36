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

Memory: a tuple per placed blob (its entries are the manifest's own),
about 150 bytes: 15 MB for 100,000 files; the leaf hashes of large files
are 1/8192 of their size.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from p2pcp.blobs.collection import Entry
from p2pcp.blobs.tree import HASH_BYTES, LEAF_SIZE, Outboard, leaf_count
from p2pcp.transfer.hashcache import RACY_MARGIN_NS, HashCache, Remembered


class PlacedFiles:
    """See the module. ``add`` from the event loop as files land;
    ``remember`` (blocking: run it in a thread) once, at the end."""

    def __init__(self, *, is_on: bool = True) -> None:
        self.is_on = is_on  # off: notes nothing (a receive without the cache)
        # (the blob's entries, its BLAKE3, when its placement was noted)
        self._placed: list[tuple[tuple[Entry, ...], bytes, int]] = []
        self._leaves: dict[bytes, bytes] = {}  # root -> leaf hashes (large blobs)
        self.last_ns = 0

    def __len__(self) -> int:
        return len(self._placed)

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
        self._placed.append((entries, bytes.fromhex(blake3_hex), self.last_ns))

    def remember(self, cache: HashCache, out_dir: Path) -> int:
        """Wait out the racy margin, then remember each placed path that is
        still the file placed there (see the module); how many were."""
        if not self._placed or not cache.is_enabled:
            return 0
        wait_ns = self.last_ns + RACY_MARGIN_NS + 1 - time.time_ns()
        if wait_ns > 0:
            time.sleep(wait_ns / 1e9)
        base = str(out_dir)
        files: list[Remembered] = []
        for entries, digest, placed_ns in self._placed:
            root = entries[0].root
            leaves = self._tree(entries[0])
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
        count = cache.remember_many(files)
        cache.flush()
        return count

    def _tree(self, entry: Entry) -> bytes | None:
        """The blob's leaf hashes if known and right (None: one leaf, or not known)."""
        leaves = self._leaves.get(entry.root)
        if leaves is None or len(leaves) != leaf_count(entry.size) * HASH_BYTES:
            return None
        if Outboard.from_leaf_hashes(entry.size, leaves, None).root != entry.root:
            return None
        return leaves
