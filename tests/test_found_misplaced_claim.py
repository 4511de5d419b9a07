"""Found by breaking: a claim object copied or restored under another task's key is believed:
``list_claims("b")`` returns a claim of instance ``a`` and ``list_claims()`` lists ``a``'s claim
twice (so do ``objstore-wfp claims`` and ``show``).

Snapshots are checked against their key ("a copied or misplaced object: answering with it would
act on another instance" raises ``SerializationError``); ``parse_claim`` does no such check, and
``Claims.held`` reports the record's own ids. Contract guarantee 5: a corrupt or foreign object
under the prefix gets a typed error and harms nothing else. Expected: the misplaced object is
skipped (with a warning, as unreadable claims are) or reported as ``SerializationError``; never
answered as a claim of another instance.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from objstore_wfp import AtTask, WorkflowSnapshot
from objstore_wfp.backends import layout
from tests.backends import StoreTarget, local_store_target, store_target

__all__ = ["local_store_target", "store_target"]

pytestmark = pytest.mark.timeout(60)


async def test_a_misplaced_claim_object_is_not_reported_for_another_instance(
    store_target: StoreTarget,
) -> None:
    async with store_target.backend() as backend:
        for instance in ("a", "b"):
            snapshot = WorkflowSnapshot(instance, "flow")
            snapshot.update_position(AtTask("t"))
            await backend.save_snapshot(snapshot)
        assert await backend.claim_task("a", "t", "worker-a", timedelta(minutes=5)) is not None
        store = store_target.store()
        try:
            found = await store.get(layout.claim_key("a", "t"))
            assert found is not None
            await store.put(layout.claim_key("b", "t"), found.data)  # an operator's bad restore
        finally:
            await store.close()
        listed = [(c.instance_id, c.task_id) for c in await backend.list_claims()]
        assert listed == [("a", "t")]
        assert all(c.instance_id == "b" for c in await backend.list_claims("b"))
