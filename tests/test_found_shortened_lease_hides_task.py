"""Found by breaking: a lease shortened by ``extend_task_claim`` hides its task from
``find_available_tasks`` until the *original* expiry, although the claim has expired and
``claim_task`` takes it over at once.

A claim moves the task's index entry to a leased one due at the lease's expiry, so polls skip
it while the lease runs. ``extend_task_claim`` is absolute (docs/semantics.md: "renewal is
absolute: ``now + additional_duration``") and may shorten the lease, but the entry is not moved
back: a worker that claimed for an hour and then cut its lease to zero (giving the task up, or
a heartbeat computed from a smaller remaining budget, as on a serverless worker near its
timeout) leaves a claimable task that no poll offers for the rest of the hour.
docs/semantics.md, Finding work: a task stops being offered when it is "claimed by a live
claim"; an expired one is not. ``InMemoryBackend`` offers it.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from objstore_wfp import AtTask, InMemoryBackend, ManualClock, PersistentBackend, WorkflowSnapshot
from tests.backends import StoreTarget, local_store_target, store_target

__all__ = ["local_store_target", "store_target"]

pytestmark = pytest.mark.timeout(60)


async def _offered_after_shortening(backend: PersistentBackend, clock: ManualClock) -> list[str]:
    snapshot = WorkflowSnapshot("wf", "flow", initial_input=b"in")
    snapshot.update_position(AtTask("t"))
    await backend.save_snapshot(snapshot)
    assert await backend.claim_task("wf", "t", "w", timedelta(hours=1)) is not None
    await backend.extend_task_claim("wf", "t", "w", timedelta(seconds=5))
    clock.advance(timedelta(seconds=6))  # the shortened lease has run out
    return [t.task_id for t in await backend.find_available_tasks("other", 10)]


async def test_in_memory_backend_offers_the_task() -> None:
    clock = ManualClock()
    assert await _offered_after_shortening(InMemoryBackend(clock=clock), clock) == ["t"]


async def test_object_store_backend_offers_the_task(store_target: StoreTarget) -> None:
    clock = ManualClock()
    async with store_target.backend(clock=clock) as backend:
        offered = await _offered_after_shortening(backend, clock)
        claimable = await backend.claim_task("wf", "t", "other", timedelta(seconds=30)) is not None
        assert (offered, claimable) == (["t"], True)
