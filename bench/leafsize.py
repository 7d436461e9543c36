"""Choose LEAF_SIZE: hashing, verifying and proof cost per candidate leaf size.

Prints, for each candidate, TreeBuilder throughput on an in-memory buffer
(fed in READ_BUFFER_BYTES pieces, as a sender reading a file would), the
RangeDecoder throughput (fed in 16 KiB pieces, as QUIC delivers them) and
the proof overhead per GiB; each as a ratio against plain BLAKE3 of the
same data measured in the same run. With ``--file PATH`` it also hashes a
file with readinto + TreeBuilder and times ``b3sum`` on it.

    /tmp/venv/bin/python bench/leafsize.py [--mib 256] [--file /tmp/blob1g]

A benchmark, not a test: it never fails on a figure.
"""

from __future__ import annotations

import argparse
import mmap
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import blake3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from p2pcp.blobs.encoding import ALL, RangeDecoder, encode_bytes, encoded_size
from p2pcp.blobs.tree import LEAF_SIZE, READ_BUFFER_BYTES, Outboard, TreeBuilder

CANDIDATES = [16 << 10, 32 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20]
GIB = 1 << 30
QUIC_CHUNK_BYTES = 16 * 1024


def best_seconds(run: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def build(data: bytes, leaf_size: int) -> None:
    view = memoryview(data)
    builder = TreeBuilder(leaf_size=leaf_size)
    for at in range(0, len(view), READ_BUFFER_BYTES):
        builder.update(view[at : at + READ_BUFFER_BYTES])
    builder.finalize()


def decode(root: bytes, body: bytes, leaf_size: int) -> None:
    view = memoryview(body)
    decoder = RangeDecoder(root, ALL, leaf_size=leaf_size)
    for at in range(0, len(view), QUIC_CHUNK_BYTES):
        decoder.receive_data(view[at : at + QUIC_CHUNK_BYTES])
        while decoder.next_event() is not None:
            pass
    if not decoder.is_finished:
        raise SystemExit("decoder did not finish")


def hash_file(path: str) -> float:
    """readinto a reused buffer + TreeBuilder; seconds."""
    buffer = bytearray(READ_BUFFER_BYTES)
    view = memoryview(buffer)
    start = time.perf_counter()
    builder = TreeBuilder()
    with open(path, "rb", buffering=0) as file:
        while count := file.readinto(buffer):
            builder.update(view[:count])
    builder.finalize()
    return time.perf_counter() - start


def hash_file_mmap(path: str) -> float:
    """mmap + TreeBuilder on READ_BUFFER_BYTES slices (no copy); seconds."""
    start = time.perf_counter()
    builder = TreeBuilder()
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        view = memoryview(mapped)
        for at in range(0, len(view), READ_BUFFER_BYTES):
            builder.update(view[at : at + READ_BUFFER_BYTES])
        view.release()
    builder.finalize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="in-memory buffer size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--file", help="also hash this file and compare with b3sum")
    args = parser.parse_args()
    size = args.mib << 20
    data = os.urandom(size)
    gbps: Callable[[float], float] = lambda seconds: size / seconds / 1e9  # noqa: E731

    one = best_seconds(lambda: blake3.blake3(data).digest(), args.repeats)
    auto = best_seconds(
        lambda: blake3.blake3(data, max_threads=blake3.blake3.AUTO).digest(), args.repeats
    )
    print(
        f"{args.mib} MiB in memory, {os.cpu_count()} cores, current LEAF_SIZE {LEAF_SIZE >> 10} KiB"
    )
    print(f"plain blake3: 1 thread {gbps(one):.2f} GB/s, all threads {gbps(auto):.2f} GB/s")
    print(
        f"{'leaf':>8} {'build GB/s':>10} {'vs 1thr':>8} {'vs all':>7}"
        f" {'verify GB/s':>11} {'vs 1thr':>8} {'proof B/GiB':>12} {'%':>6}"
    )
    for leaf_size in CANDIDATES:
        built = best_seconds(partial(build, data, leaf_size), args.repeats)
        outboard = Outboard.from_bytes(data, leaf_size)
        body = encode_bytes(outboard, data)
        verified = best_seconds(partial(decode, outboard.root, body, leaf_size), args.repeats)
        del body
        overhead = encoded_size(GIB, ALL, leaf_size) - GIB
        print(
            f"{leaf_size >> 10:>6}Ki {gbps(built):>10.2f} {one / built:>8.2f} {auto / built:>7.2f}"
            f" {gbps(verified):>11.2f} {one / verified:>8.2f} {overhead:>12,}"
            f" {100 * overhead / GIB:>6.3f}"
        )
    if args.file:
        file_size = os.path.getsize(args.file)
        hash_file(args.file)  # warm the page cache
        rates = {
            "readinto + TreeBuilder": file_size / min(hash_file(args.file) for _ in range(5)),
            "mmap + TreeBuilder": file_size / min(hash_file_mmap(args.file) for _ in range(5)),
        }
        b3sum = shutil.which("b3sum")
        b3sum_rate = 0.0
        if b3sum:
            runs = []
            for _ in range(5):
                start = time.perf_counter()
                subprocess.run([b3sum, args.file], check=True, capture_output=True)
                runs.append(time.perf_counter() - start)
            b3sum_rate = file_size / min(runs)
            print(f"file {args.file}: b3sum (all threads) {b3sum_rate / 1e9:.2f} GB/s")
        for label, rate in rates.items():
            ratio = f", {rate / b3sum_rate:.2f}x b3sum" if b3sum_rate else ""
            print(f"file {args.file}: {label} {rate / 1e9:.2f} GB/s{ratio}")


if __name__ == "__main__":
    main()
