"""The Redis example backend against the conformance suite, on a real redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis_backend import RedisBackend

from objstore_wfp import ManualClock
from objstore_wfp.testing import BackendConformance


class TestRedisBackend(BackendConformance):
    @pytest.fixture
    async def backend(
        self, clock: ManualClock, redis_url: str, redis_prefix: str
    ) -> AsyncIterator[RedisBackend]:
        backend = RedisBackend.from_url(redis_url, prefix=redis_prefix, clock=clock)
        yield backend
        await backend.close()
