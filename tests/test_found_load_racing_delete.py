"""Found by breaking: ``load_snapshot`` racing a ``delete_snapshot`` (or a replace) of an
instance whose input or results live in blobs reports the instance as *corrupt*:
``SerializationError: ... blob ... is missing``, which the CLI turns into exit 1 "holds an
unreadable object".

``Snapshots.materialize`` fetches the blobs of the copy it read; the delete removes the
incarnation's blob folder right after the snapshot. The contract's ``SerializationError`` means
"stored bytes unreadable"; nothing stored is unreadable here. Expected: ``NotFoundError`` for a
deleted instance (or the new incarnation after a replace), found by re-reading the snapshot when
a blob is missing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from objstore_wfp import AtTask, ObjectStoreBackend, WorkflowSnapshot
from objstore_wfp.backends import layout
from objstore_wfp.errors import NotFoundError
from tests.backends import StoreTarget, local_store_target, store_target
from tests.test_zombies import HookStore

__all__ = ["local_store_target", "store_target"]

pytestmark = pytest.mark.timeout(60)

INSTANCE = "big/input"
SNAPSHOT_KEY = layout.snapshot_key(layout.encode_id(INSTANCE))


@pytest.fixture
async def pair(store_target: StoreTarget) -> AsyncIterator[tuple[ObjectStoreBackend, ObjectStoreBackend]]:
    client = store_target.backend()
    reader = store_target.backend_through(HookStore, inline_limit=16)
    yield client, reader
    await client.close()
    await reader.close()


async def test_a_load_racing_a_delete_reports_not_found(
    pair: tuple[ObjectStoreBackend, ObjectStoreBackend],
) -> None:
    client, reader = pair
    hooks = reader.store
    assert isinstance(hooks, HookStore)
    snapshot = WorkflowSnapshot(INSTANCE, "flow", initial_input=b"x" * 100)  # in a blob
    snapshot.update_position(AtTask("t"))
    await reader.save_snapshot(snapshot)

    async def delete() -> None:
        await client.delete_snapshot(INSTANCE)

    hooks.after("get", SNAPSHOT_KEY, delete)
    with pytest.raises(NotFoundError):
        await reader.load_snapshot(INSTANCE)
    assert hooks.fired == 1
