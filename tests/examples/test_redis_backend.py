"""The Redis example backend against the conformance suite, on a real redis-server, plus what
the suite cannot do generically: corrupt stored data and an unreachable server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import redis.asyncio
from redis_backend import RedisBackend

from objstore_wfp import (
    AtTask,
    ClaimLostError,
    ManualClock,
    OffsetClock,
    SerializationError,
    StoreUnavailableError,
    WorkflowSnapshot,
)
from objstore_wfp.testing import BackendConformance
from tests.servers import free_port

HOUR = timedelta(hours=1)


class TestRedisBackend(BackendConformance):
    @pytest.fixture
    async def backend(
        self, clock: ManualClock, redis_url: str, redis_prefix: str
    ) -> AsyncIterator[RedisBackend]:
        backend = RedisBackend.from_url(redis_url, prefix=redis_prefix, clock=clock)
        yield backend
        await backend.close()


async def test_corrupt_snapshot_is_a_serialization_error(redis_url: str, redis_prefix: str) -> None:
    backend = RedisBackend.from_url(redis_url, prefix=redis_prefix, clock=ManualClock())
    async with backend:
        await backend.save_snapshot(WorkflowSnapshot("bad", "def-1"))
        await backend.save_snapshot(WorkflowSnapshot("good", "def-1"))
        async with redis.asyncio.Redis.from_url(redis_url) as client:
            await client.hset(f"{redis_prefix}snap:bad", "doc", b'{"format": 1, "kind": "snap')
        with pytest.raises(SerializationError, match="snap:bad"):
            await backend.load_snapshot("bad")
        assert (await backend.load_snapshot("good")).instance_id == "good"


async def test_unreachable_server_is_store_unavailable() -> None:
    backend = RedisBackend.from_url(f"redis://127.0.0.1:{free_port()}/0", clock=ManualClock())
    async with backend:
        with pytest.raises(StoreUnavailableError):
            await backend.list_snapshots()


async def test_leases_ignore_wall_clocks(redis_url: str, redis_prefix: str) -> None:
    """Workers on different machines, wall clocks an hour apart: a live claim is never taken,
    an expired one is taken at once, even by a backend that never saw it (the server's TIME)."""
    ttl = timedelta(seconds=1)

    def on(machine: str, offset: timedelta) -> RedisBackend:
        clock = OffsetClock(offset, domain=machine)
        return RedisBackend.from_url(redis_url, prefix=redis_prefix, clock=clock)

    holder, rival = on("holder", -HOUR), on("rival", HOUR)
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
        fresh = on("fresh", HOUR)
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
