"""``StoreConformance``: the checks every :class:`~objstore_wfp.stores.base.ConditionalStore`
adapter passes.

Subclass it and provide a ``store`` fixture that yields a store on an empty root::

    from objstore_wfp.testing.stores import StoreConformance

    class TestMyStore(StoreConformance):
        @pytest.fixture
        async def store(self, tmp_path):
            store = MyStore(tmp_path)
            yield store
            await store.close()

The backend's guarantees rest on these properties: a conditional write never degrades to an
overwrite, and of N concurrent conditional writers exactly one wins, also when the writers are
separate processes: override the ``store_url`` fixture to run that race too.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
from typing import Any

import pytest

from objstore_wfp.errors import UnsupportedStoreError
from objstore_wfp.stores.base import ConditionalStore

RACERS = 16
PROCESSES, PROCESS_KEYS = 4, 10

_PROCESS_RACER = """
import asyncio, json, sys
from objstore_wfp.stores.urls import open_store

async def main():
    url, options, me = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    store = open_store(url, **options)
    try:
        print(json.dumps([await store.put_if_absent(f"claim/{n}", me.encode()) is not None
                          for n in range({keys})]))
    finally:
        await store.close()

asyncio.run(main())
""".replace("{keys}", str(PROCESS_KEYS))


async def _keys(store: ConditionalStore, prefix: str, start_after: str | None = None) -> list[str]:
    return [o.key async for o in store.list(prefix, start_after=start_after)]


class StoreConformance:
    """Abstract test class: subclasses supply the ``store`` fixture."""

    @pytest.fixture
    def store_url(self) -> tuple[str, dict[str, Any]] | None:
        """``(url, storage_options)`` of a fresh, empty root on the same store, which other
        processes open with :func:`objstore_wfp.stores.urls.open_store`; ``None`` (the default)
        skips the race between processes."""
        return None

    def test_processes_racing_for_one_key_have_one_winner(
        self, store_url: tuple[str, dict[str, Any]] | None
    ) -> None:
        if store_url is None:
            pytest.skip("no store_url: this store cannot be shared between processes")
        url, options = store_url
        racers = [
            subprocess.Popen(
                [sys.executable, "-c", _PROCESS_RACER, url, json.dumps(options), f"proc-{i}"],
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(PROCESSES)
        ]
        outcomes = []
        for racer in racers:
            out, _ = racer.communicate(timeout=120)
            assert racer.returncode == 0, f"a racing process exited with {racer.returncode}"
            outcomes.append(json.loads(out))
        for n in range(PROCESS_KEYS):
            winners = sum(outcome[n] for outcome in outcomes)
            assert winners == 1, f"{winners} processes won the create-if-absent of claim/{n}"

    async def test_get_missing_returns_none(self, store: ConditionalStore) -> None:
        assert await store.get("absent/key.json") is None

    async def test_put_then_get_round_trips_bytes_and_version(self, store: ConditionalStore) -> None:
        data = bytes(range(256)) * 4
        version = await store.put("a/b/c.json", data)
        found = await store.get("a/b/c.json")
        assert found is not None
        assert found.data == data
        assert found.version == version

    async def test_put_overwrites_and_changes_version(self, store: ConditionalStore) -> None:
        v1 = await store.put("k", b"one")
        v2 = await store.put("k", b"two")
        assert v1 != v2
        found = await store.get("k")
        assert found is not None and (found.data, found.version) == (b"two", v2)

    async def test_empty_and_large_objects(self, store: ConditionalStore) -> None:
        big = secrets.token_bytes(3 * 1024 * 1024 + 17)
        await store.put("empty", b"")
        await store.put("big", big)
        empty, found = await store.get("empty"), await store.get("big")
        assert empty is not None and empty.data == b""
        assert found is not None and found.data == big

    async def test_put_if_absent_creates_once(self, store: ConditionalStore) -> None:
        version = await store.put_if_absent("claim.json", b"first")
        assert version is not None
        assert await store.put_if_absent("claim.json", b"second") is None
        found = await store.get("claim.json")
        assert found is not None and (found.data, found.version) == (b"first", version)

    async def test_put_if_version_swaps_only_on_match(self, store: ConditionalStore) -> None:
        v1 = await store.put("cas", b"one")
        v2 = await store.put_if_version("cas", b"two", v1)
        assert v2 is not None and v2 != v1
        assert await store.put_if_version("cas", b"three", v1) is None, "stale version must lose"
        found = await store.get("cas")
        assert found is not None and (found.data, found.version) == (b"two", v2)

    async def test_put_if_version_on_missing_key_fails(self, store: ConditionalStore) -> None:
        v1 = await store.put("gone", b"one")
        await store.delete("gone")
        assert await store.put_if_version("gone", b"two", v1) is None
        assert await store.get("gone") is None

    async def test_delete_is_idempotent(self, store: ConditionalStore) -> None:
        await store.put("d", b"x")
        await store.delete("d")
        await store.delete("d")
        assert await store.get("d") is None

    async def test_delete_if_version(self, store: ConditionalStore) -> None:
        v1 = await store.put("cd", b"one")
        v2 = await store.put("cd", b"two")
        if not store.supports_conditional_delete:
            with pytest.raises(UnsupportedStoreError):
                await store.delete_if_version("cd", v2)
            return
        assert await store.delete_if_version("cd", v1) is False
        assert await store.get("cd") is not None
        assert await store.delete_if_version("cd", v2) is True
        assert await store.get("cd") is None
        assert await store.delete_if_version("cd", v2) is False

    async def test_list_prefix_in_byte_order(self, store: ConditionalStore) -> None:
        keys = ["p/a-b", "p/a/x", "p/a/y/z", "p/a.c", "p/B", "p/~t", "q/other", "pp/no"]
        for key in keys:
            await store.put(key, key.encode())
        assert await _keys(store, "p/") == sorted(k for k in keys if k.startswith("p/"))
        assert await _keys(store, "p/a") == ["p/a-b", "p/a.c", "p/a/x", "p/a/y/z"]
        assert await _keys(store, "p/a/") == ["p/a/x", "p/a/y/z"]
        assert await _keys(store, "none/") == []

    async def test_list_start_after(self, store: ConditionalStore) -> None:
        for i in range(5):
            await store.put(f"s/{i}", b"x")
        assert await _keys(store, "s/", start_after="s/2") == ["s/3", "s/4"]

    async def test_list_reflects_writes_and_deletes_at_once(self, store: ConditionalStore) -> None:
        await store.put("l/1", b"x")
        assert await _keys(store, "l/") == ["l/1"]
        await store.put_if_absent("l/2", b"x")
        await store.delete("l/1")
        assert await _keys(store, "l/") == ["l/2"]

    async def test_concurrent_put_if_absent_has_one_winner(self, store: ConditionalStore) -> None:
        payloads = [f"writer-{i}".encode() for i in range(RACERS)]
        results = await asyncio.gather(*(store.put_if_absent("race", p) for p in payloads))
        winners = [p for p, v in zip(payloads, results, strict=True) if v is not None]
        assert len(winners) == 1, f"{len(winners)} writers won a create-if-absent"
        found = await store.get("race")
        assert found is not None and found.data == winners[0]

    async def test_concurrent_cas_has_one_winner(self, store: ConditionalStore) -> None:
        base = await store.put("cas-race", b"base")
        payloads = [f"writer-{i}".encode() for i in range(RACERS)]
        results = await asyncio.gather(*(store.put_if_version("cas-race", p, base) for p in payloads))
        winners = [p for p, v in zip(payloads, results, strict=True) if v is not None]
        assert len(winners) == 1, f"{len(winners)} writers won a compare-and-swap"
        found = await store.get("cas-race")
        assert found is not None and found.data == winners[0]

    async def test_all_key_characters(self, store: ConditionalStore) -> None:
        key = "chars/AZaz09._~-/" + "x" * 200
        await store.put(key, b"ok")
        found = await store.get(key)
        assert found is not None and found.data == b"ok"
        assert await _keys(store, "chars/") == [key]
