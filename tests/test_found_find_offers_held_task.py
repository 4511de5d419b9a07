"""Found by breaking: ``find_available_tasks`` offers a task under a live claim once the task
left the ready set and came back (the position moved away and back by snapshot saves).

The ready index offers *fresh* entries without reading the claim: "a fresh entry's task had no
claim of this incarnation when it became ready". That holds only for the first time a task
becomes ready. A claim moves the task's fresh entry out of sight but publishes no fence (first
claim of the incarnation), so when a later save makes the task ready again, ``Composer.compose``
finds it neither in ``old.ready`` nor in ``old.fences`` and writes a new *fresh* entry; polls then
offer the held task for the whole lease. The contract: ``find_available_tasks`` returns "never a
task that is ... claimed by a live claim" (``InMemoryBackend`` gets this right; the differential
suite does not move a position back).
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from objstore_wfp import AtTask, InMemoryBackend, PersistentBackend, WorkflowSnapshot
from tests.backends import StoreTarget, local_store_target, store_target

__all__ = ["local_store_target", "store_target"]

pytestmark = pytest.mark.timeout(60)


async def _offered_while_held(backend: PersistentBackend) -> list[tuple[str, str]]:
    snapshot = WorkflowSnapshot("wf", "flow", initial_input=b"in")
    snapshot.update_position(AtTask("t"))
    await backend.save_snapshot(snapshot)
    claim = await backend.claim_task("wf", "t", "holder", timedelta(minutes=5))
    assert claim is not None
    for task in ("elsewhere", "t"):  # e.g. an operator rewinds the workflow to t
        snapshot = await backend.load_snapshot("wf")
        snapshot.update_position(AtTask(task))
        await backend.save_snapshot(snapshot)
    assert await backend.claim_task("wf", "t", "other", timedelta(minutes=5)) is None  # still held
    return [(t.instance_id, t.task_id) for t in await backend.find_available_tasks("other", 10)]


async def test_in_memory_backend_does_not_offer_a_held_task() -> None:
    assert await _offered_while_held(InMemoryBackend()) == []


async def test_object_store_backend_does_not_offer_a_held_task(store_target: StoreTarget) -> None:
    async with store_target.backend() as backend:
        assert await _offered_while_held(backend) == []
