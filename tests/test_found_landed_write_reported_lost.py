"""Found by breaking: when a snapshot write landed but the store reports it lost (what the S3
adapter documents for an ambiguous conditional PUT whose object was replaced before its check),
and the retried decision then refuses (the fence moved), ``Composer.discarded_on_error`` deletes
the index entries of the write that landed, while the snapshot still references them: a ready
task without an entry, which no poll finds until someone runs ``repair``.

``objstore_wfp/stores/s3.py``: "if our write landed and was already replaced or deleted by
someone else before the check, the call reports a loss (safe: ... the caller re-reads and
decides, as after any refusal)". Here a worker's ``record_and_advance`` lands (recording task t1
and making t2 ready with a fresh entry), its connection drops, a takeover of t1 publishes its
fence by compare-and-swap over the landed copy (keeping t2 and its entry), the adapter's check
finds another object and reports a loss, the re-read decision raises ``ClaimLostError``, and the
composer deletes t2's entry. Contract guarantee 4: never leave a dispatchable workflow that
``find_available_tasks`` cannot find again. The wrapper below models the adapter's documented
answer on any store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest

from objstore_wfp import AtTask, ManualClock, ObjectStoreBackend, WorkflowSnapshot
from objstore_wfp.backends import layout
from objstore_wfp.errors import ClaimLostError
from tests.backends import StoreTarget, local_store_target, store_target
from tests.test_zombies import HookStore

__all__ = ["local_store_target", "store_target"]

pytestmark = pytest.mark.timeout(120)

INSTANCE = "ambiguous/write"
TTL = timedelta(seconds=10)
SNAPSHOT_KEY = layout.snapshot_key(layout.encode_id(INSTANCE))


class LandedButReportedLost(HookStore):
    """The next CAS of ``key`` is applied, then ``meanwhile`` runs, then it is reported lost."""

    armed: tuple[str, Callable[[], Awaitable[None]]] | None = None

    async def put_if_version(self, key: str, data: bytes, version: str) -> str | None:
        written = await super().put_if_version(key, data, version)
        if self.armed is not None and key == self.armed[0] and written is not None:
            _, meanwhile = self.armed
            self.armed = None
            await meanwhile()
            return None
        return written


@pytest.fixture
async def cast(
    store_target: StoreTarget,
) -> AsyncIterator[tuple[ObjectStoreBackend, ObjectStoreBackend, ManualClock]]:
    clock = ManualClock()
    worker = store_target.backend_through(LandedButReportedLost, clock=clock)
    rescuer = store_target.backend(clock=clock)
    yield worker, rescuer, clock
    await worker.close()
    await rescuer.close()


async def test_a_landed_write_reported_lost_leaves_its_ready_task_findable(
    cast: tuple[ObjectStoreBackend, ObjectStoreBackend, ManualClock],
) -> None:
    worker, rescuer, clock = cast
    store = worker.store
    assert isinstance(store, LandedButReportedLost)
    snapshot = WorkflowSnapshot(INSTANCE, "flow", initial_input=b"in")
    snapshot.update_position(AtTask("t1"))
    await rescuer.save_snapshot(snapshot)
    claim = await worker.claim_task(INSTANCE, "t1", "worker", TTL)
    assert claim is not None

    async def take_over() -> None:  # the worker's lease ran out while its response was lost
        clock.advance(TTL + timedelta(seconds=1))
        assert await rescuer.claim_task(INSTANCE, "t1", "rescuer", TTL) is not None

    def advance(s: WorkflowSnapshot) -> bool:
        s.mark_task_completed("t1", b"out")
        s.update_position(AtTask("t2"))
        return True

    store.armed = (SNAPSHOT_KEY, take_over)
    with pytest.raises(ClaimLostError):
        await worker.record_and_advance(claim, b"out", advance)
    assert store.armed is None, "the write never landed"
    stored = await rescuer.load_snapshot(INSTANCE)
    assert stored.position == AtTask("t2")  # the landed write is what the store holds
    found = [(t.instance_id, t.task_id) for t in await rescuer.find_available_tasks("w", 5)]
    assert found == [(INSTANCE, "t2")], "t2 is ready in the snapshot but no poll finds it"
