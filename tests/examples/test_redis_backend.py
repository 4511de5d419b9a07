"""The Redis example backend against the conformance suite, on a real redis-server, plus what
the suite cannot do generically: corrupt stored data and an unreachable server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio
from redis_backend import RedisBackend

from objstore_wfp import ManualClock, OffsetClock, SerializationError, StoreUnavailableError, WorkflowSnapshot
from objstore_wfp.testing import BackendConformance
from tests.examples.skew import check_leases_ignore_wall_clocks
from tests.servers import free_port


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
    async def open_backend(clock: OffsetClock) -> RedisBackend:
        return RedisBackend.from_url(redis_url, prefix=redis_prefix, clock=clock)

    await check_leases_ignore_wall_clocks(open_backend)
