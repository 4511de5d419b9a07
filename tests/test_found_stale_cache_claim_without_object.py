"""Found by breaking: a worker whose snapshot cache holds a deleted incarnation claims a task
that has no claim object yet, gets a claim back, and another worker gets a claim on the same
task at the same moment: two unexpired claims handed out for one task.

``Claims.claim`` binds the claim to the incarnation of ``snapshots.current_or_cached``; it
reads the snapshot fresh only when a stored claim object disagrees with that incarnation. When
the task was never claimed there is no claim object, so nothing disagrees: the claim is written
for the deleted incarnation, is dead on arrival for the current one, and is returned to the
caller as if it held. ``find_available_tasks`` rightly offers the task to everybody (it ignores
dead claims) and the next ``claim_task`` wins a second, live claim. Any long-running worker that
saved or read the instance before a ``Client.submit(..., if_exists="replace")`` does this. The
contract's guarantee 1: "at no moment ... do two workers both hold an unexpired claim on one
(instance, task)"; ``claim_task`` returns a claim only when no live claim exists, and the one it
returns must then be the live one. (The integrator's earlier fix covers a claim object of
another incarnation; this is the case of no claim object at all.)
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from objstore_wfp import AtFork, WorkflowSnapshot
from tests.backends import StoreTarget, local_store_target, store_target

__all__ = ["local_store_target", "store_target"]

pytestmark = pytest.mark.timeout(60)

TTL = timedelta(minutes=5)


def _snapshot(completed: tuple[str, ...]) -> WorkflowSnapshot:
    snapshot = WorkflowSnapshot("wf", "flow", initial_input=b"in")
    snapshot.update_position(AtFork("f", ["a", "b"], completed))
    return snapshot


async def test_a_stale_cache_does_not_hand_out_a_second_claim(store_target: StoreTarget) -> None:
    async with (
        store_target.backend() as stale,
        store_target.backend() as client,
        store_target.backend() as other,
    ):
        await stale.save_snapshot(_snapshot(("a",)))  # `stale` caches incarnation 1
        await client.delete_snapshot("wf")  # Client.submit(..., if_exists="replace")
        await client.save_snapshot(_snapshot(()))  # incarnation 2: a and b ready
        first = await stale.claim_task("wf", "b", "stale-worker", TTL)
        offered = [t.task_id for t in await other.find_available_tasks("other-worker", 10)]
        second = await other.claim_task("wf", "b", "other-worker", TTL)
        holders = [c.worker_id for c in (first, second) if c is not None]
        assert len(holders) == 1, f"two unexpired claims handed out on wf/b: {holders}"
        if first is not None:
            assert offered == ["a"], "a task under the claim just returned is offered"
