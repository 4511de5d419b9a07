"""Found by breaking: a task claimed just before a concurrent save makes it ready is offered
by ``find_available_tasks`` while the claim is live, from a *fresh* index entry that polls offer
without reading the claim; if the claimer dies at that point the task stays offered (and every
claim of it refused) for its whole lease.

``Claims.claim`` of a task that is not ready in the claimer's view writes the claim with no
index entry, then publishes its fence into the snapshot, and only then moves the task's entry
("Made ready by a write that landed before this early claim's fence: move its entry"). A save
that makes the task ready between the claim write and the fence sees no fence for it and writes
a fresh entry. Until the claimer's move deletes that entry, every poll offers the held task; a
claimer killed in between (SIGKILL, a Lambda timeout) leaves it offered until its lease ends.
Contract: ``find_available_tasks`` returns "never a task that is ... claimed by a live claim";
README guarantee 3 (a process killed at any instant leaves a consistent store).
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from objstore_wfp import AtTask, ObjectStoreBackend, WorkflowSnapshot
from objstore_wfp.backends import layout
from tests.backends import StoreTarget, local_store_target, store_target
from tests.test_zombies import HookStore

__all__ = ["local_store_target", "store_target"]

pytestmark = pytest.mark.timeout(60)

TTL = timedelta(minutes=5)
SNAPSHOT_KEY = layout.snapshot_key(layout.encode_id("wf"))
CLAIM_KEY = layout.claim_key(layout.encode_id("wf"), layout.encode_id("t"))


class Died(Exception):
    """The claimer's process ends here."""


async def test_a_task_claimed_early_is_not_offered(store_target: StoreTarget) -> None:
    async with store_target.backend() as client, store_target.backend() as poller:
        claimer: ObjectStoreBackend = store_target.backend_through(HookStore)
        hooks = claimer.store
        assert isinstance(hooks, HookStore)
        snapshot = WorkflowSnapshot("wf", "flow", initial_input=b"in")
        snapshot.update_position(AtTask("before"))
        await client.save_snapshot(snapshot)
        await claimer.load_snapshot("wf")  # the claimer's view: t is not ready yet

        async def make_ready() -> None:
            current = await client.load_snapshot("wf")
            current.mark_task_completed("before", b"done")
            current.update_position(AtTask("t"))
            await client.save_snapshot(current)

        async def make_ready_and_die() -> None:
            await make_ready()
            raise Died

        # The claim is written; a save makes the task ready; the claimer dies before it does
        # anything more (whatever it did before the claim, e.g. publish its fence, stays).
        hooks.after("put_if_absent", CLAIM_KEY, make_ready_and_die)
        with pytest.raises(Died):
            await claimer.claim_task("wf", "t", "claimer", TTL)
        assert hooks.fired == 1
        await claimer.close()
        assert await poller.claim_task("wf", "t", "poller", TTL) is None  # the claim is live
        offered = [t.task_id for t in await poller.find_available_tasks("poller", 10)]
        assert offered == [], "a task under a live claim is offered"
