"""Failing input 5 of issue 11: what a poll costs when many tasks are claimed.

The contract: ``find_available_tasks`` with limit L costs LIST pages over the ready index plus
at most L GETs, whatever else is in the store, including how many tasks are claimed or
running; an idle poll is LISTs only. Counted by a ``CountingStore`` (LIST per 1,000-key page)
around the real store, so the test holds for any protocol.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pytest

from objstore_wfp import AtTask, ManualClock, ObjectStoreBackend, WorkflowSnapshot
from objstore_wfp.stores.counting import CountingStore
from tests.backends import StoreTarget, local_store_target, memory_store_target

__all__ = ["local_store_target", "memory_store_target"]

pytestmark = pytest.mark.timeout(180)

CLAIMED = 200
#: Requests that read or list; everything else a poll sends is a write.
READS = frozenset({"get", "list"})


@pytest.fixture(
    params=[
        pytest.param("local_store_target", id="local"),
        pytest.param("memory_store_target", id="memory"),
        pytest.param("moto_store_target", id="moto", marks=pytest.mark.slow),
    ]
)
def target(request: pytest.FixtureRequest) -> StoreTarget:
    found: StoreTarget = request.getfixturevalue(request.param)
    return found


async def _ready(backend: ObjectStoreBackend, instance_id: str) -> None:
    snap = WorkflowSnapshot(instance_id, "flow", initial_input=b"in")
    snap.update_position(AtTask("t"))
    await backend.save_snapshot(snap)


async def _poll(backend: ObjectStoreBackend, counting: CountingStore) -> tuple[list[str], Counter[str]]:
    counting.reset()
    found = await backend.find_available_tasks("poller", 1)
    return [t.instance_id for t in found], Counter(counting.counts)


async def test_a_poll_does_not_read_claimed_tasks(target: StoreTarget) -> None:
    clock = ManualClock()
    counting = CountingStore(target.store())
    backend = ObjectStoreBackend(counting, clock=clock)
    try:
        await backend.verify_store()
        ids = [f"busy/{n:03d}" for n in range(CLAIMED)]
        for start in range(0, CLAIMED, 25):
            batch = ids[start : start + 25]
            await asyncio.gather(*(_ready(backend, i) for i in batch))
            claims = await asyncio.gather(
                *(backend.claim_task(i, "t", "worker", timedelta(hours=1)) for i in batch)
            )
            assert all(claims)
        # Made ready last, so it is the last in dispatch order: every claimed task comes first.
        clock.advance(timedelta(seconds=1))

        idle_found, idle = await _poll(backend, counting)
        await _ready(backend, "free")
        found, busy = await _poll(backend, counting)

        assert (idle_found, found) == ([], ["free"])
        problems = []
        if set(idle) - {"list"}:
            problems.append(f"an idle poll ({CLAIMED} tasks claimed) sent {dict(idle)}: LISTs only allowed")
        if busy["get"] > 1 or set(busy) - READS:
            problems.append(
                f"a poll with limit 1 ({CLAIMED} tasks claimed, 1 free) sent {dict(busy)}: "
                "at most 1 GET plus LIST pages allowed"
            )
        assert not problems, "; ".join(problems)
    finally:
        await backend.close()
