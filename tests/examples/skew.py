"""One check for every example backend: leases that ignore the workers' wall clocks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from objstore_wfp import AtTask, ClaimLostError, OffsetClock, PersistentBackend, WorkflowSnapshot

HOUR = timedelta(hours=1)


async def check_leases_ignore_wall_clocks(
    open_backend: Callable[[OffsetClock], Awaitable[PersistentBackend]],
) -> None:
    """Workers on different machines, wall clocks an hour apart: a live claim is never taken,
    an expired one is taken at once, even by a backend that never saw it (the server's clock),
    and the old holder can no longer record. ``open_backend(clock)`` opens one worker's backend."""
    ttl = timedelta(seconds=1)

    async def on(machine: str, offset: timedelta) -> PersistentBackend:
        return await open_backend(OffsetClock(offset, domain=machine))

    holder, rival = await on("holder", -HOUR), await on("rival", HOUR)
    try:
        snapshot = WorkflowSnapshot("wf", "def")
        snapshot.update_position(AtTask("t"))
        await holder.save_snapshot(snapshot)
        sent = time.monotonic()
        claim = await holder.claim_task("wf", "t", "holder", ttl)
        assert claim is not None
        assert await rival.claim_task("wf", "t", "rival", ttl) is None, "a live claim was taken"
        assert await rival.find_available_tasks("rival", 10) == []
        await asyncio.sleep(max(0.0, sent + ttl.total_seconds() - time.monotonic()) + 0.05)
        fresh = await on("fresh", HOUR)
        try:
            assert [t.task_id for t in await fresh.find_available_tasks("fresh", 10)] == ["t"]
            taken = await fresh.claim_task("wf", "t", "fresh", ttl)
        finally:
            await fresh.close()
        assert taken is not None and taken.token == claim.token + 1
        with pytest.raises(ClaimLostError):
            await holder.save_task_result("wf", "t", b"late", claim=claim)
    finally:
        await holder.close()
        await rival.close()
