"""The PostgreSQL example backend against the conformance suite, on a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from postgres_backend import PostgresBackend

from objstore_wfp import ManualClock
from objstore_wfp.testing import BackendConformance


class TestPostgresBackend(BackendConformance):
    @pytest.fixture
    async def backend(
        self, clock: ManualClock, postgres_dsn: str, postgres_schema: str
    ) -> AsyncIterator[PostgresBackend]:
        backend = await PostgresBackend.connect(postgres_dsn, schema=postgres_schema, clock=clock)
        yield backend
        await backend.close()
