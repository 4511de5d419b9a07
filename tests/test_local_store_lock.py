"""The local store's compare-and-swap against many writers at once: processes, and threads within
each (every write runs in a thread), all incrementing one counter by read + ``put_if_version``.
A lock that failed to exclude any pair of them would let two swaps from the same version both
succeed, and the counter would end below the number of swaps that reported success."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path

import pytest

from objstore_wfp.stores.local import LocalStore

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

PROCESSES, COROUTINES, INCREMENTS = 4, 3, 12
KEY = "counter/value"


def _increment(root: str, out: str) -> None:
    async def one(store: LocalStore) -> int:
        won = lost = 0
        while won < INCREMENTS:
            current = await store.get(KEY)
            assert current is not None
            if await store.put_if_version(KEY, b"%d" % (int(current.data) + 1), current.version):
                won += 1
            else:
                lost += 1
        return lost

    async def main() -> list[int]:
        store = LocalStore(root)
        return await asyncio.gather(*(one(store) for _ in range(COROUTINES)))

    Path(out).write_text(str(sum(asyncio.run(main()))))


def test_concurrent_swaps_across_processes_and_threads_lose_no_update(tmp_path: Path) -> None:
    root = tmp_path / "store"
    asyncio.run(LocalStore(root).put(KEY, b"0"))
    ctx = multiprocessing.get_context("spawn")
    outs = [tmp_path / f"lost-{n}" for n in range(PROCESSES)]
    procs = [ctx.Process(target=_increment, args=(str(root), str(out))) for out in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    assert [p.exitcode for p in procs] == [0] * PROCESSES
    found = asyncio.run(LocalStore(root).get(KEY))
    assert found is not None
    assert int(found.data) == PROCESSES * COROUTINES * INCREMENTS
    # The test only means something if the writers did collide.
    assert sum(int(out.read_text()) for out in outs) > 0
