"""A userspace delay line: an Ethernet link that holds, reorders and drops frames.

The test kernels have no ``tc netem`` ("Specified qdisc kind is unknown",
and modules cannot be loaded), so delay, jitter and reordering
come from this small process. It opens two TAP devices (``/dev/net/tun``,
``IFF_TAP | IFF_NO_PI``) in the namespace it runs in and moves every frame
that arrives on one to the other, each held for ``delay ± jitter`` (drawn
uniformly per frame, so frames overtake each other whenever the jitter
exceeds their spacing), and drops a frame with probability ``loss``. With
``--keep-order`` a frame is never due before the one that arrived before it
(the jitter of a queue, as on most real paths, without reordering). The lab
puts each TAP into a bridge (``Lab.attach_delay_line``), so the line sits
transparently on one Ethernet segment: IP addresses, routes, NAT and TTLs
are untouched, and every protocol (ARP, UDP, TCP) crosses it alike.

Run as a script under ``ip netns exec`` (standard library only, Linux)::

    python delayline.py LEFT RIGHT --delay-ms 50 --jitter-ms 20 [--loss 0.0]
                        [--keep-order] [--seed N] [--queue-frames 20000]

It prints ``{"ready": true, ...}`` once both devices exist (they are created
down; the caller brings them up and bridges them), and on SIGTERM or SIGINT
one ``{"stats": {...}}`` line (frames forwarded, dropped, reordered, the
largest queue), then exits 0. The devices vanish with the process.

Design: one thread, one ``select`` over both descriptors with a timeout until
the next frame is due; a heap of (due time, arrival number, frame) per
direction. Reads drain each device until ``EAGAIN``; a full queue drops the
new frame (a router's tail drop), so memory stays bounded.
"""

from __future__ import annotations

import argparse
import fcntl
import heapq
import json
import os
import random
import select
import signal
import struct
import sys
import time
from dataclasses import dataclass, field

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
# An Ethernet frame on a 1500-byte MTU link is at most 1514 bytes (no FCS);
# read with room to spare so a larger MTU never truncates silently.
MAX_FRAME_BYTES = 65536
# About 20 ms of a 1 Gbit/s link in 1500-byte frames: enough for any rate the
# lab tests run at; beyond it the line tail-drops like a router buffer.
DEFAULT_QUEUE_FRAMES = 20000


def open_tap(name: str) -> int:
    """Create TAP device ``name`` in this namespace; return its non-blocking fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    request = struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI)
    fcntl.ioctl(fd, TUNSETIFF, request)
    return fd


@dataclass(order=True)
class Held:
    """One frame waiting in the line, ordered by when it is due."""

    due: float
    number: int  # arrival order within its direction
    frame: bytes = field(compare=False)


@dataclass
class Direction:
    """Frames read from ``source`` and written, late, to ``target``."""

    name: str
    source: int
    target: int
    queue: list[Held] = field(default_factory=list)
    arrived: int = 0
    forwarded: int = 0
    dropped: int = 0
    reordered: int = 0  # frames written after a frame that arrived later
    max_queue: int = 0
    _highest_sent: int = -1
    _last_due: float = 0.0

    def stats(self) -> dict[str, int]:
        return {
            "arrived": self.arrived,
            "forwarded": self.forwarded,
            "dropped": self.dropped,
            "reordered": self.reordered,
            "max_queue": self.max_queue,
        }


class DelayLine:
    """Two directions sharing one clock, one random source and one select loop."""

    def __init__(
        self,
        left: int,
        right: int,
        *,
        delay_s: float,
        jitter_s: float,
        loss: float,
        is_ordered: bool,
        queue_frames: int,
        rng: random.Random,
    ) -> None:
        self.directions = (
            Direction("left_to_right", left, right),
            Direction("right_to_left", right, left),
        )
        self.delay_s = delay_s
        self.jitter_s = jitter_s
        self.loss = loss
        self.is_ordered = is_ordered
        self.queue_frames = queue_frames
        self.rng = rng
        self.is_running = True

    def _hold_for_s(self) -> float:
        return max(0.0, self.delay_s + self.rng.uniform(-self.jitter_s, self.jitter_s))

    def _read_all(self, direction: Direction, now: float) -> None:
        while True:
            try:
                frame = os.read(direction.source, MAX_FRAME_BYTES)
            except BlockingIOError:
                return
            number = direction.arrived
            direction.arrived += 1
            if (self.loss and self.rng.random() < self.loss) or len(
                direction.queue
            ) >= self.queue_frames:
                direction.dropped += 1
                continue
            due = now + self._hold_for_s()
            if self.is_ordered:
                due = max(due, direction._last_due)
            direction._last_due = due
            heapq.heappush(direction.queue, Held(due, number, frame))
            direction.max_queue = max(direction.max_queue, len(direction.queue))

    def _release_due(self, direction: Direction, now: float) -> None:
        while direction.queue and direction.queue[0].due <= now:
            held = heapq.heappop(direction.queue)
            try:
                os.write(direction.target, held.frame)
            except BlockingIOError:  # the device's queue is full: a drop on the wire
                direction.dropped += 1
                continue
            except OSError:  # device down (being torn down): nothing to deliver to
                direction.dropped += 1
                continue
            direction.forwarded += 1
            if held.number < direction._highest_sent:
                direction.reordered += 1
            direction._highest_sent = max(direction._highest_sent, held.number)

    def run(self) -> None:
        fds = [direction.source for direction in self.directions]
        by_fd = {direction.source: direction for direction in self.directions}
        while self.is_running:
            now = time.monotonic()
            dues = [d.queue[0].due for d in self.directions if d.queue]
            timeout = max(0.0, min(dues) - now) if dues else 1.0
            try:
                readable, _, _ = select.select(fds, [], [], timeout)
            except InterruptedError:
                continue
            now = time.monotonic()
            for fd in readable:
                self._read_all(by_fd[fd], now)
            for direction in self.directions:
                self._release_due(direction, now)

    def stats(self) -> dict[str, dict[str, int]]:
        return {direction.name: direction.stats() for direction in self.directions}


def _say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("left", help="name of the first TAP device to create")
    parser.add_argument("right", help="name of the second TAP device to create")
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--loss", type=float, default=0.0, help="drop probability, 0..1")
    parser.add_argument(
        "--keep-order", action="store_true", help="jitter without reordering (a queue's)"
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--queue-frames", type=int, default=DEFAULT_QUEUE_FRAMES)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    line = DelayLine(
        open_tap(args.left),
        open_tap(args.right),
        delay_s=args.delay_ms / 1000,
        jitter_s=args.jitter_ms / 1000,
        loss=args.loss,
        is_ordered=args.keep_order,
        queue_frames=args.queue_frames,
        rng=random.Random(seed),
    )

    def stop(_signum: int, _frame: object) -> None:
        line.is_running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    _say(ready=True, left=args.left, right=args.right, seed=seed)
    line.run()
    _say(stats=line.stats())


if __name__ == "__main__":
    main(sys.argv[1:])
