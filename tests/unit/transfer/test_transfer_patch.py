"""receive --update's plan and file work (transfer/patch.py), on real files.

The plan: a leaf the base holds at its index is kept, one the old file
holds anywhere is copied, the rest is fetched, in requests of at most
wire.MAX_RANGES ranges that never name a leaf we have. The file work: the
new version is built beside the old file (which is never written), each
leaf checked against its proven hash in the pass that copies it, and
only a result whose every leaf passed counts; the old file's hashes the
plan used (the hash cache's) are never trusted for content.
"""

from __future__ import annotations

import asyncio
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3
import pytest

from p2pcp.blobs.encoding import LeafReceived
from p2pcp.blobs.tree import HASH_BYTES, LEAF_SIZE, Outboard, hash_leaf
from p2pcp.core.errors import ConnectionLostError, IntegrityError, LocalProtocolError
from p2pcp.transfer import patch as patch_module
from p2pcp.transfer import wire
from p2pcp.transfer.patch import (
    Patch,
    PatchFile,
    check_tree,
    plan_patch,
    ranges_bytes,
    request_ranges,
)


def _leaves(*names: str, last: int = LEAF_SIZE) -> bytes:
    """Leaves named by a letter each (a leaf of that byte), the last ``last`` long."""
    data = b"".join(name.encode() * LEAF_SIZE for name in names)
    return data[: len(data) - LEAF_SIZE + last]


def _hashes(data: bytes) -> bytes:
    return Outboard.from_bytes(data).leaf_hashes


def test_plan_keeps_copies_from_any_offset_and_fetches_the_rest() -> None:
    old = _leaves("a", "b", "c", "d")
    new = _leaves("b", "a", "c", "x", "d")  # a and b swapped, x inserted, d moved
    plan = plan_patch(_hashes(new), len(new), _hashes(old), _hashes(old))
    assert plan.kept_bytes == LEAF_SIZE  # c at index 2 in both
    assert sorted(plan.copies) == [(0, 1), (1, 0), (4, 3)]
    assert plan.fetch == [3]


def test_plan_matches_a_short_last_leaf_only_with_the_same_bytes() -> None:
    old = _leaves("a", "b", last=100)
    grown = _leaves("a", "b", "c")  # b is now a full leaf: not the old short one
    plan = plan_patch(_hashes(grown), len(grown), _hashes(old), _hashes(old))
    assert plan.kept_bytes == LEAF_SIZE and plan.copies == [] and plan.fetch == [1, 2]
    shrunk = _leaves("a", last=100)
    plan = plan_patch(_hashes(shrunk), len(shrunk), _hashes(old), _hashes(old))
    assert plan.fetch == [0]  # "a" * 100 is no leaf of the old file


def test_plan_uses_the_base_only_where_it_already_matches() -> None:
    """An interrupted run's base holds new leaves at their place (kept) and
    old ones elsewhere: copies come from the old file, never the base."""
    old = _leaves("a", "b", "c")
    new = _leaves("c", "b", "a")
    base = _leaves("c", "b", "c")  # leaf 0 already copied, then a kill
    plan = plan_patch(_hashes(new), len(new), _hashes(base), _hashes(old))
    assert plan.kept_bytes == 2 * LEAF_SIZE
    assert plan.copies == [(2, 0)] and plan.fetch == []


def test_plan_copies_a_leaf_from_its_own_place_when_the_old_file_has_it_there() -> None:
    """A fresh base is empty: every leaf the old file holds is a copy, from
    the same index when it is there (the pass then reads the old file in
    order), else from the first index that has it."""
    old = _leaves("a", "b", "a", "c")
    new = _leaves("a", "x", "a", "a")
    plan = plan_patch(_hashes(new), len(new), b"", _hashes(old))
    assert plan.kept_bytes == 0
    assert plan.copies == [(0, 0), (2, 2), (3, 0)] and plan.fetch == [1]


def test_plan_never_uses_an_unknown_hash() -> None:
    """A leaf a pass found wrong is planned as unknown (all zero bytes):
    neither kept nor a source, even where the new hash list says zeros."""
    new = _leaves("a", "b")
    unknown = bytes(HASH_BYTES)
    base = unknown + _hashes(new)[HASH_BYTES:]
    plan = plan_patch(_hashes(new), len(new), base, unknown * 2)
    assert plan.kept_bytes == LEAF_SIZE and plan.copies == [] and plan.fetch == [0]
    plan = plan_patch(unknown * 2, len(new), unknown * 2, unknown * 2)
    assert plan.kept_bytes == 0 and plan.copies == [] and plan.fetch == [0, 1]


def test_plan_with_nothing_in_common_fetches_everything() -> None:
    new = _leaves("x", "y", last=7)
    plan = plan_patch(_hashes(new), len(new), b"", b"")
    assert plan.kept_bytes == 0 and plan.copies == [] and plan.fetch == [0, 1]
    with pytest.raises(LocalProtocolError):
        plan_patch(_hashes(new)[:HASH_BYTES], len(new), b"", b"")


def test_requests_merge_runs_and_name_only_missing_leaves() -> None:
    assert request_ranges([]) == []
    assert request_ranges([3, 4, 5, 9, 11, 12]) == [((3, 6), (9, 10), (11, 13))]
    with pytest.raises(LocalProtocolError):
        request_ranges([4, 3])


def test_requests_hold_at_most_max_ranges_each() -> None:
    missing = list(range(0, 2 * 2500, 2))  # 2,500 isolated leaves
    requests = request_ranges(missing)
    assert [len(ranges) for ranges in requests] == [wire.MAX_RANGES, wire.MAX_RANGES, 452]
    asked = [leaf for ranges in requests for start, end in ranges for leaf in range(start, end)]
    assert asked == missing
    for ranges in requests:  # each one a valid GET
        wire.decode_request(wire.encode_request(wire.GetRequest(bytes(32), ranges)))
    assert ranges_bytes(((0, 2), (5, 6)), 5 * LEAF_SIZE + 10) == 2 * LEAF_SIZE + 10


def test_check_tree_refuses_hashes_that_do_not_make_the_root() -> None:
    data = random.Random(3).randbytes(3 * LEAF_SIZE + 5)
    outboard = Outboard.from_bytes(data)
    check_tree(outboard.root, len(data), outboard.leaf_hashes, "f")
    lie = bytearray(outboard.leaf_hashes)
    lie[40] ^= 1
    with pytest.raises(IntegrityError):
        check_tree(outboard.root, len(data), bytes(lie), "f")
    with pytest.raises(IntegrityError):
        check_tree(outboard.root, len(data), outboard.leaf_hashes[:-HASH_BYTES], "f")


def _leaf(data: bytes, index: int) -> LeafReceived:
    piece = data[index * LEAF_SIZE : (index + 1) * LEAF_SIZE]
    return LeafReceived(index, index * LEAF_SIZE, piece, hash_leaf(piece))


@pytest.fixture(params=["direct", "page-cache"])
def write_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways the pass writes copies: O_DIRECT (where the file system
    allows it) and through the page cache (no O_DIRECT: other systems)."""
    if request.param == "page-cache":
        monkeypatch.setattr(patch_module, "_O_DIRECT", 0)
    return str(request.param)


def test_patch_file_builds_the_new_version_and_leaves_the_old_one_alone(
    tmp_path: Path, write_path: str
) -> None:
    rng = random.Random(8)
    blocks = [rng.randbytes(LEAF_SIZE) for _ in range(6)]
    old_data = b"".join(blocks)
    new_data = blocks[3] + blocks[0] + rng.randbytes(LEAF_SIZE) + blocks[5] + b"tail"
    old = tmp_path / "file"
    old.write_bytes(old_data)
    new = Outboard.from_bytes(new_data)
    patch = PatchFile(tmp_path / "x.patch", old, new.root, len(new_data), new.leaf_hashes)
    plan = patch.prepare(None)
    assert plan.fetch == [2, 4]  # the new leaf and the short tail
    assert patch.reused_bytes == 3 * LEAF_SIZE
    patch.write_leaves([_leaf(new_data, 2), _leaf(new_data, 4)])
    assert patch.finish()
    assert (tmp_path / "x.patch").read_bytes() == new_data
    assert patch.result is not None and patch.result.root == new.root
    assert patch.result.blake3_hex == blake3.blake3(new_data).hexdigest()
    assert old.read_bytes() == old_data


def test_a_large_update_is_built_in_runs_with_the_last_leaf_short(
    tmp_path: Path, write_path: str
) -> None:
    """Several pass runs (more leaves than one run holds), copies from the
    same place and from elsewhere, a fetched leaf in the middle and a short
    last leaf: the result is the new version, and its standard BLAKE3."""
    rng = random.Random(11)
    count = 3 * patch_module.PASS_RUN_BYTES // LEAF_SIZE + 3
    old_data = rng.randbytes(count * LEAF_SIZE + 1000)
    new_data = bytearray(old_data)
    new_data[5 * LEAF_SIZE + 10 : 5 * LEAF_SIZE + 20] = b"0123456789"  # leaf 5 changed
    new_data[9 * LEAF_SIZE : 10 * LEAF_SIZE] = old_data[20 * LEAF_SIZE : 21 * LEAF_SIZE]
    new_data = bytes(new_data)
    old = tmp_path / "file"
    old.write_bytes(old_data)
    new = Outboard.from_bytes(new_data)
    patch = PatchFile(tmp_path / "l.patch", old, new.root, len(new_data), new.leaf_hashes)
    plan = patch.prepare(None)
    assert plan.fetch == [5] and (9, 20) in plan.copies
    patch.write_leaves([_leaf(new_data, 5)])
    assert patch.finish()
    assert (tmp_path / "l.patch").read_bytes() == new_data
    assert patch.result is not None and patch.result.root == new.root
    assert patch.result.blake3_hex == blake3.blake3(new_data).hexdigest()
    assert old.read_bytes() == old_data


def test_an_old_file_changed_after_the_plan_is_not_trusted(tmp_path: Path) -> None:
    """The plan trusts the old file's hashes (from the hash cache, say) only
    to decide where to look: a leaf of the old file that changed between
    the plan and the copy fails its check in the pass, nothing is placed
    (finish is False), the next plan fetches that leaf (never copying from
    there again) and the result is the new version, verified."""
    rng = random.Random(12)
    old_data = rng.randbytes(6 * LEAF_SIZE)
    new_data = old_data[: 4 * LEAF_SIZE] + rng.randbytes(LEAF_SIZE) + old_data[5 * LEAF_SIZE :]
    old = tmp_path / "file"
    old.write_bytes(old_data)
    new = Outboard.from_bytes(new_data)
    patch = PatchFile(tmp_path / "c.patch", old, new.root, len(new_data), new.leaf_hashes)
    plan = patch.prepare(Outboard.from_bytes(old_data).leaf_hashes)  # as the cache knew it
    assert plan.fetch == [4]
    with open(old, "r+b") as handle:  # someone writes to the old file meanwhile
        handle.seek(2 * LEAF_SIZE + 100)
        handle.write(b"changed")
    patch.write_leaves([_leaf(new_data, 4)])
    assert not patch.finish()
    assert patch.result is None
    plan = patch.prepare(Outboard.from_bytes(old_data).leaf_hashes)  # the same stale hashes
    assert plan.fetch == [2]
    patch.write_leaves([_leaf(new_data, 2)])
    assert patch.finish()
    assert (tmp_path / "c.patch").read_bytes() == new_data
    assert patch.result is not None and patch.result.blake3_hex == (
        blake3.blake3(new_data).hexdigest()
    )


def test_an_old_file_gone_after_the_plan_means_fetching_what_it_held(tmp_path: Path) -> None:
    rng = random.Random(13)
    old_data = rng.randbytes(3 * LEAF_SIZE)
    new_data = old_data + b"more"
    old = tmp_path / "file"
    old.write_bytes(old_data)
    new = Outboard.from_bytes(new_data)
    patch = PatchFile(tmp_path / "g.patch", old, new.root, len(new_data), new.leaf_hashes)
    assert patch.prepare(None).fetch == [3]
    old.unlink()
    patch.write_leaves([_leaf(new_data, 3)])
    assert not patch.finish()
    assert patch.prepare(None).fetch == [0, 1, 2]
    patch.write_leaves([_leaf(new_data, index) for index in range(3)])
    assert patch.finish()
    assert (tmp_path / "g.patch").read_bytes() == new_data


def test_patch_file_refuses_a_leaf_that_is_not_its_hash(tmp_path: Path) -> None:
    new_data = random.Random(9).randbytes(2 * LEAF_SIZE)
    new = Outboard.from_bytes(new_data)
    patch = PatchFile(tmp_path / "y.patch", None, new.root, len(new_data), new.leaf_hashes)
    assert patch.prepare(None).fetch == [0, 1]
    good = _leaf(new_data, 0)
    with pytest.raises(IntegrityError):
        patch.write_leaves([LeafReceived(0, 0, b"x" + good.data[1:], good.hash)])
    patch.close()


def test_a_stale_base_is_planned_again_from_its_real_hashes(tmp_path: Path) -> None:
    """A ``.patch`` left by a run, damaged since: the result does not hash
    to the root, and the second plan (from the result's own hashes) fetches
    exactly the damaged leaf."""
    rng = random.Random(10)
    new_data = rng.randbytes(4 * LEAF_SIZE)
    new = Outboard.from_bytes(new_data)
    path = tmp_path / "z.patch"
    path.write_bytes(new_data)
    patch = PatchFile(path, None, new.root, len(new_data), new.leaf_hashes)
    patch.base_hashes = new.leaf_hashes  # what the plan believes
    assert patch.prepare(None).fetch == []
    with open(path, "r+b") as handle:  # the base changes under it
        handle.seek(LEAF_SIZE + 7)
        handle.write(b"!")
    assert not patch.finish()
    assert patch.prepare(None).fetch == [1]
    patch.write_leaves([_leaf(new_data, 1)])
    assert patch.finish()
    assert path.read_bytes() == new_data


def _big_change(tmp_path: Path, seed: int) -> tuple[Path, bytes, bytes, Outboard]:
    """An old file of several pass runs and its new version with leaf 5
    and the last leaf changed."""
    rng = random.Random(seed)
    count = 3 * patch_module.PASS_RUN_BYTES // LEAF_SIZE + 3
    old_data = rng.randbytes(count * LEAF_SIZE + 1000)
    new_data = bytearray(old_data)
    new_data[5 * LEAF_SIZE + 10 : 5 * LEAF_SIZE + 20] = b"0123456789"
    new_data[-5:] = b"tail!"
    old = tmp_path / "file"
    old.write_bytes(old_data)
    return old, old_data, bytes(new_data), Outboard.from_bytes(bytes(new_data))


def test_the_pass_starts_before_the_fetched_leaves_and_waits_for_each(tmp_path: Path) -> None:
    """The pass runs while the changed leaves are fetched (step 4): it
    copies what lies before the first leaf still on its way, waits there,
    and goes on as each is written; the result is the new version."""
    old, old_data, new_data, new = _big_change(tmp_path, 21)
    patch = PatchFile(tmp_path / "o.patch", old, new.root, len(new_data), new.leaf_hashes)
    last = len(new_data) // LEAF_SIZE
    assert patch.prepare(None).fetch == [5, last]
    waits: list[tuple[int, int]] = []
    await_arrivals = patch._await_arrivals

    def recording(first: int, count: int) -> None:
        waits.append((first, count))
        await_arrivals(first, count)

    patch._await_arrivals = recording  # type: ignore[method-assign]
    passing = ThreadPoolExecutor(1).submit(patch.finish)
    # The pass reaches the run holding leaf 5 (it copied leaves 0-4 first)
    # and waits; nothing can finish without the fetched leaves.
    deadline = time.monotonic() + 30
    while not waits:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert waits[0][0] <= 5 < waits[0][0] + waits[0][1]
    assert not passing.done()
    patch.write_leaves([_leaf(new_data, 5)])
    patch.write_leaves([_leaf(new_data, last)])
    assert passing.result(timeout=30) is True
    assert (tmp_path / "o.patch").read_bytes() == new_data
    assert (
        patch.result is not None and patch.result.blake3_hex == blake3.blake3(new_data).hexdigest()
    )
    assert old.read_bytes() == old_data


def test_a_fetch_that_fails_stops_a_waiting_pass_and_the_old_file_stays(tmp_path: Path) -> None:
    old, old_data, new_data, new = _big_change(tmp_path, 22)
    patch = Patch(PatchFile(tmp_path / "f.patch", old, new.root, len(new_data), new.leaf_hashes))

    async def failing_fetch() -> None:
        await patch.write_leaf(_leaf(new_data, 5))  # one arrives, then the sender is gone
        await asyncio.sleep(0.2)
        raise ConnectionLostError("the sender went away")

    async def main() -> None:
        await patch.prepare(None)
        with pytest.raises(ConnectionLostError, match="went away"):
            await asyncio.wait_for(patch.finish_while(failing_fetch()), 30)
        await patch.close()

    asyncio.run(main())
    assert patch.result is None
    assert old.read_bytes() == old_data


def test_a_fetch_that_ends_short_makes_the_missing_leaf_fail_its_check(tmp_path: Path) -> None:
    """A fetch that ends without a leaf (it cannot, but if it did) does not
    leave the pass waiting: the leaf fails its check and the next plan
    fetches it again."""
    old, _old_data, new_data, new = _big_change(tmp_path, 23)
    last = len(new_data) // LEAF_SIZE
    patch = Patch(PatchFile(tmp_path / "s.patch", old, new.root, len(new_data), new.leaf_hashes))

    async def short_fetch() -> None:
        await patch.write_leaf(_leaf(new_data, 5))  # the last leaf never comes

    async def main() -> None:
        await patch.prepare(None)
        assert await asyncio.wait_for(patch.finish_while(short_fetch()), 30) is False
        plan = await patch.prepare(None)
        assert plan.fetch == [last]
        assert await asyncio.wait_for(
            patch.finish_while(patch.write_leaf(_leaf(new_data, last))), 30
        )
        await patch.close()

    asyncio.run(main())
    assert (tmp_path / "s.patch").read_bytes() == new_data


def test_cancelling_an_update_mid_pass_ends_it_without_a_hang(tmp_path: Path) -> None:
    old, old_data, new_data, new = _big_change(tmp_path, 24)
    patch = Patch(PatchFile(tmp_path / "c.patch", old, new.root, len(new_data), new.leaf_hashes))

    async def never() -> None:
        await asyncio.Event().wait()  # a fetch that never delivers

    async def main() -> None:
        await patch.prepare(None)
        task = asyncio.ensure_future(patch.finish_while(never()))
        await asyncio.sleep(0.3)
        task.cancel()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 30)
        assert task.cancelled()
        await patch.close()

    asyncio.run(main())
    assert old.read_bytes() == old_data


def test_more_updates_at_once_than_the_loop_has_threads_all_finish(tmp_path: Path) -> None:
    """Each pass may wait for its fetched leaves, which are written on the
    event loop's default threads: with more passes than those threads (the
    fetcher runs FETCH_CONCURRENCY updates at once), the passes must not
    take the threads the writes need (a bench's update once hung so)."""
    rng = random.Random(25)
    patches: list[tuple[Patch, bytes, Path]] = []
    for number in range(6):
        old_data = rng.randbytes(4 * LEAF_SIZE)
        new_data = old_data[: 2 * LEAF_SIZE] + rng.randbytes(LEAF_SIZE) + old_data[3 * LEAF_SIZE :]
        old = tmp_path / f"file{number}"
        old.write_bytes(old_data)
        new = Outboard.from_bytes(new_data)
        target = tmp_path / f"{number}.patch"
        file = PatchFile(target, old, new.root, len(new_data), new.leaf_hashes)
        patches.append((Patch(file), new_data, target))

    async def update(patch: Patch, new_data: bytes) -> bool:
        assert (await patch.prepare(None)).fetch == [2]

        async def fetch() -> None:
            await asyncio.sleep(0.2)  # every pass is waiting by now
            await patch.write_leaf(_leaf(new_data, 2))

        try:
            return await patch.finish_while(fetch())
        finally:
            await patch.close()

    async def main() -> list[bool]:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(2))
        jobs = [update(patch, new_data) for patch, new_data, _target in patches]
        return await asyncio.wait_for(asyncio.gather(*jobs), 30)

    assert asyncio.run(main()) == [True] * len(patches)
    for _patch, new_data, target in patches:
        assert target.read_bytes() == new_data
