"""The local store's compare-and-swap against many writers at once: processes, and threads within
each (every write runs in a thread), all incrementing one counter by read + ``put_if_version``.
A lock that failed to exclude any pair of them would let two swaps from the same version both
succeed, and the counter would end below the number of swaps that reported success."""

from __future__ import annotations

import asyncio
import fcntl
import multiprocessing
import os
import re
import time
from pathlib import Path

import pytest

from objstore_wfp.errors import StoreUnavailableError
from objstore_wfp.stores import local
from objstore_wfp.stores.local import LocalStore
from tests.test_found_stopped_lock_holder import _lock_file

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


def test_every_locked_write_gives_up_on_a_lock_held_too_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A holder that never lets go (stopped, say) costs each write LOCK_WAIT_SECONDS, then a typed
    # error naming the lock file; the write's thread ends, and nothing was written.
    monkeypatch.setattr(local, "LOCK_WAIT_SECONDS", 0.3)
    store = LocalStore(tmp_path / "store")
    version = asyncio.run(store.put(KEY, b"0"))
    lock = _lock_file(store.root, KEY)
    writes = {
        "put": lambda: store.put(KEY, b"1"),
        "put_if_version": lambda: store.put_if_version(KEY, b"1", version),
        "delete_if_version": lambda: store.delete_if_version(KEY, version),
        "delete": lambda: store.delete(KEY),
    }
    holder = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        for name, write in writes.items():
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError, match=re.escape(str(lock))):
                asyncio.run(write())
            assert 0.3 <= time.monotonic() - started < 5, name
    finally:
        os.close(holder)
    found = asyncio.run(store.get(KEY))
    assert found is not None and found.version == version
    assert asyncio.run(store.put_if_version(KEY, b"1", version)) is not None
