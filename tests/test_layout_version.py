"""The key layout is versioned: a store written by another layout is refused, naming both."""

from __future__ import annotations

import orjson
import pytest

from objstore_wfp import ObjectStoreBackend, SerializationError
from objstore_wfp.backends import layout
from objstore_wfp.stores.memory import MemoryStore


async def _backend(objects: dict[str, bytes], name: str) -> ObjectStoreBackend:
    store = MemoryStore(name)
    for key, data in objects.items():
        await store.put(key, data)
    return ObjectStoreBackend(store, verify_conditional_writes=False)


async def test_a_layout_1_store_is_refused_with_both_versions_named() -> None:
    # Layout 1 had no marker, a cancels/ folder, and snapshots at the same keys.
    old = orjson.dumps({"format": 1, "kind": "snapshot", "instance_id": "x"})
    backend = await _backend({"snapshots/x.json": old, "cancels/x.json": b"{}"}, "layout-1")
    with pytest.raises(SerializationError, match=r"layout 1.*layout 2"):
        await backend.list_snapshots()
    with pytest.raises(SerializationError, match=r"layout 1.*layout 2"):
        await backend.find_available_tasks("w", 1)


async def test_a_later_layout_is_refused() -> None:
    marker = orjson.dumps({"format": "objstore-wfp", "layout": 3})
    backend = await _backend({layout.MARKER: marker}, "layout-3")
    with pytest.raises(SerializationError, match=r"layout 3.*layout 2"):
        await backend.list_snapshots()


async def test_an_empty_root_is_marked_on_first_use() -> None:
    backend = await _backend({}, "layout-new")
    assert await backend.list_snapshots() == []
    found = await backend.store.get(layout.MARKER)
    assert found is not None and orjson.loads(found.data) == {"format": "objstore-wfp", "layout": 2}
