"""The PostgreSQL example backend against the conformance suite, on a real PostgreSQL server,
plus corrupt stored data, which the suite cannot write generically."""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest
from postgres_backend import PostgresBackend
from psycopg import sql

from objstore_wfp import ManualClock, OffsetClock, SerializationError, WorkflowSnapshot
from objstore_wfp.testing import BackendConformance
from tests.examples.skew import check_leases_ignore_wall_clocks


class TestPostgresBackend(BackendConformance):
    @pytest.fixture
    async def backend(
        self, clock: ManualClock, postgres_dsn: str, postgres_schema: str
    ) -> AsyncIterator[PostgresBackend]:
        backend = await PostgresBackend.connect(postgres_dsn, schema=postgres_schema, clock=clock)
        yield backend
        await backend.close()


async def test_corrupt_snapshot_is_a_serialization_error(postgres_dsn: str, postgres_schema: str) -> None:
    backend = await PostgresBackend.connect(postgres_dsn, schema=postgres_schema, clock=ManualClock())
    async with backend:
        await backend.save_snapshot(WorkflowSnapshot("bad", "def-1"))
        await backend.save_snapshot(WorkflowSnapshot("good", "def-1"))
        async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
            table = sql.Identifier(postgres_schema, "snapshots")
            await conn.execute(sql.SQL("UPDATE {} SET doc = '[1, 2' WHERE instance_id = 'bad'").format(table))
        with pytest.raises(SerializationError, match="bad"):
            await backend.load_snapshot("bad")
        assert (await backend.load_snapshot("good")).instance_id == "good"


async def test_leases_ignore_wall_clocks(postgres_dsn: str, postgres_schema: str) -> None:
    async def open_backend(clock: OffsetClock) -> PostgresBackend:
        return await PostgresBackend.connect(postgres_dsn, schema=postgres_schema, clock=clock)

    await check_leases_ignore_wall_clocks(open_backend)
