"""The local-disk and memory adapters against the store conformance suite, plus local-only checks."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from objstore_wfp.stores.local import LocalStore
from objstore_wfp.stores.memory import MemoryStore
from objstore_wfp.testing.stores import StoreConformance


class TestMemoryStore(StoreConformance):
    @pytest.fixture
    async def store(self) -> AsyncIterator[MemoryStore]:
        yield MemoryStore(f"test-{secrets.token_hex(4)}")


class TestLocalStore(StoreConformance):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[LocalStore]:
        yield LocalStore(tmp_path / "root")

    @pytest.fixture
    def store_url(self, tmp_path: Path) -> tuple[str, dict[str, Any]]:
        return str(tmp_path / "shared"), {}


async def test_memory_roots_are_shared_within_a_process() -> None:
    root = f"shared-{secrets.token_hex(4)}"
    await MemoryStore(root).put("k", b"v")
    found = await MemoryStore(root).get("k")
    assert found is not None and found.data == b"v"
    assert await MemoryStore(root + "-other").get("k") is None


async def test_local_identical_bytes_get_a_new_version(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    v1 = await store.put("k", b"same")
    v2 = await store.put("k", b"same")
    assert v1 != v2
    assert await store.put_if_version("k", b"other", v1) is None


async def test_local_leaves_no_temp_files_and_hides_dotfiles(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    await store.put_if_absent("a/k", b"1")
    await store.put_if_absent("a/k", b"2")
    v = await store.put("a/k", b"3")
    await store.put_if_version("a/k", b"4", v)
    (tmp_path / "a" / ".stray.tmp").write_bytes(b"junk")
    assert sorted(os.listdir(tmp_path / "a")) == [".stray.tmp", "k"]
    assert [o.key async for o in store.list("")] == ["a/k"]


async def test_local_directory_at_key_reads_as_missing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    (tmp_path / "dir").mkdir()
    assert await store.get("dir") is None


async def test_local_delete_prunes_directories_it_empties(tmp_path: Path) -> None:
    # Every finished task deletes a ready entry two directories deep; left behind, the empty
    # directories would make every later poll of the index slower.
    store = LocalStore(tmp_path)
    await store.put("ready/3/slot/inst/task", b"x")
    await store.put("ready/3/other", b"y")
    await store.delete("ready/3/slot/inst/task")
    assert not (tmp_path / "ready" / "3" / "slot").exists()
    assert (tmp_path / "ready" / "3" / "other").exists()
    await store.put_if_absent("ready/3/slot/inst/again", b"z")
    assert [o.key async for o in store.list("ready/")] == ["ready/3/other", "ready/3/slot/inst/again"]


async def test_local_discards_only_old_temp_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    await store.put("a/k", b"kept")
    old, fresh = tmp_path / "a" / ".k.dead.tmp", tmp_path / "a" / ".k.live.tmp"
    old.write_bytes(b"torn")
    fresh.write_bytes(b"in flight")
    os.utime(old, (0, 0))
    assert await store.discard_debris(older_than=60) == 1
    assert not old.exists() and fresh.exists()
    found = await store.get("a/k")
    assert found is not None and found.data == b"kept"


def _churn(root: str, n: int) -> None:
    import asyncio

    async def main() -> None:
        store = LocalStore(root)
        for i in range(150):
            key = f"shared/dir/p{n}-{i}"
            assert await store.put_if_absent(key, b"x") is not None
            version = await store.put(key, b"y")
            assert await store.delete_if_version(key, version)

    asyncio.run(main())


def test_local_directory_pruning_is_safe_across_processes(tmp_path: Path) -> None:
    # Each delete removes the directory it empties while other processes write into it: every
    # write and delete must still succeed (found by an 8-process claim race).
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_churn, args=(str(tmp_path), n)) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]


async def test_local_write_survives_a_temporary_name_in_use(tmp_path: Path) -> None:
    # Temporary names are a per-store tag and a counter; a forked copy of the store would draw
    # the same ones. A name in use must cost a new tag, never the write.
    store = LocalStore(tmp_path)
    await store.put("d/warm", b"0")  # makes the directory
    following = next(store._count) + 1  # the number the next write's temporary name takes
    stray = tmp_path / "d" / f".k.{store._tag}{following:x}.tmp"
    stray.write_bytes(b"another writer's")
    assert await store.put_if_absent("d/k", b"mine") is not None
    found = await store.get("d/k")
    assert found is not None and found.data == b"mine"
    assert stray.read_bytes() == b"another writer's"


async def test_local_long_listing_across_batches(tmp_path: Path) -> None:
    # The first keys are walked on the event loop one at a time, the rest in growing batches
    # in a thread: every key comes once, in byte order, also when the consumer stops early.
    store = LocalStore(tmp_path)
    keys = sorted(f"ready/{i % 3}/{i:04d}.r/inst/t{i}" for i in range(100))
    for key in keys:
        await store.put(key, b"")
    assert [o.key async for o in store.list("ready/")] == keys
    assert [o.key async for o in store.list("ready/", start_after=keys[49])] == keys[50:]
    first = []
    async for obj in store.list("ready/"):
        first.append(obj.key)
        if len(first) == 8:
            break
    assert first == keys[:8]
