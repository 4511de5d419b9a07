"""Found by breaking: on stores without conditional delete, ``delete_snapshot(if_version=v)`` (what
``objstore-wfp gc`` runs) deletes the *new* incarnation when a replace lands between its check
and its delete; the new workflow is lost with its claims, entries and blobs orphaned.

``ObjectStoreBackend._delete_version`` falls back to an unconditional DELETE where the store has
no conditional delete: every ``+obstore`` URL (obstore has none, also on AWS S3, the setting the
README recommends for serverless workers) and LocalStack. The contract's guarantee 3 names gc
and delete among what may never remove anything of a new incarnation, and guarantee 4 forbids
losing a dispatchable workflow; docs/object-store.md says both "Every delete acts on what it
read ... by conditional delete (``if_version=`` for tools such as ``gc``)" and "What no guarantee
rests on: conditional delete". ``tests/test_incarnations.py`` runs its gc race only on the logic
stages. Expected: ``ConflictError`` (or success) with the new instance intact on every store, or
the limitation stated as a refusal: ``if_version=`` refused with ``UnsupportedStoreError`` on a
store that cannot honour it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from objstore_wfp import AtTask, ObjectStoreBackend, WorkflowSnapshot
from objstore_wfp.backends import layout
from objstore_wfp.errors import ConflictError, UnsupportedStoreError
from tests.backends import StoreTarget, local_store_target, store_target
from tests.test_zombies import HookStore

__all__ = ["local_store_target", "store_target"]

pytestmark = pytest.mark.timeout(120)

INSTANCE = "finished/then/replaced"
SNAPSHOT_KEY = layout.snapshot_key(layout.encode_id(INSTANCE))


@pytest.fixture
async def pair(store_target: StoreTarget) -> AsyncIterator[tuple[ObjectStoreBackend, ObjectStoreBackend]]:
    client = store_target.backend()
    gc = store_target.backend_through(HookStore)
    yield client, gc
    await client.close()
    await gc.close()


async def test_gc_never_deletes_the_instance_that_replaced_the_one_it_judged(
    pair: tuple[ObjectStoreBackend, ObjectStoreBackend],
) -> None:
    client, gc = pair
    hooks = gc.store
    assert isinstance(hooks, HookStore)
    finished = WorkflowSnapshot(INSTANCE, "flow", initial_input=b"old")
    finished.mark_completed(b"done")
    await client.save_snapshot(finished)
    judged = (await gc.load_snapshot(INSTANCE)).version
    assert judged is not None

    async def replace() -> None:  # Client.submit(..., if_exists="replace") between check and delete
        await client.delete_snapshot(INSTANCE)
        new = WorkflowSnapshot(INSTANCE, "flow", initial_input=b"new")
        new.update_position(AtTask("t"))
        await client.save_snapshot(new)

    hooks.before("delete", SNAPSHOT_KEY, replace)
    hooks.before("delete_if_version", SNAPSHOT_KEY, replace)
    try:
        await gc.delete_snapshot(INSTANCE, if_version=judged)
    except UnsupportedStoreError:
        # The limitation stated as a refusal, before anything was touched.
        assert not gc.store.supports_conditional_delete
        assert hooks.fired == 0
        assert (await client.load_snapshot(INSTANCE)).version == judged
        return
    except ConflictError:
        pass
    assert hooks.fired >= 1, "the replace was never stepped in"
    survivor = await client.load_snapshot(INSTANCE)  # NotFoundError: gc deleted the replacement
    assert survivor.initial_input == b"new"
    assert [(t.instance_id, t.task_id) for t in await client.find_available_tasks("w", 5)] == [
        (INSTANCE, "t")
    ]
