"""ObjectStoreBackend on S3: the backend conformance suite against moto_server and LocalStack.

Both servers are real processes started once per session (``tests/servers/s3.py``). Each test gets
an empty store: one bucket per server, a fresh random prefix per test. LocalStack answers 501 to a
conditional DeleteObject, so there the probe switches the store to the backend's fallback.

The probe costs 15 requests, as much as a typical test here, so it runs once per server and
session, and each test's backend takes its verdict (``verify_conditional_writes=False`` plus the
conditional-delete flag the probe found). The first-use probe of ``from_url`` itself is tested
below and in ``test_s3_backend.py``.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import orjson
import pytest

from objstore_wfp import ManualClock, ObjectStoreBackend, WorkflowSnapshot
from objstore_wfp.backends import layout
from objstore_wfp.model import AtTask
from objstore_wfp.stores.counting import CountingStore
from objstore_wfp.stores.probe import ProbeReport, probe_store
from objstore_wfp.stores.s3 import S3Store
from objstore_wfp.testing import BackendConformance
from tests.servers.s3 import S3Endpoint


@pytest.fixture(scope="session")
def s3_shared_bucket(s3_endpoint: S3Endpoint) -> str:
    """One bucket per server for the whole session; tests separate themselves by prefix."""
    return s3_endpoint.create_bucket("conf")


@pytest.fixture(scope="session")
def s3_probe(s3_endpoint: S3Endpoint, s3_shared_bucket: str) -> ProbeReport:
    """What the store probe finds on this server (once per session)."""

    async def probe() -> ProbeReport:
        store = S3Store(f"{s3_shared_bucket}/probe", **s3_endpoint.storage_options())
        try:
            return await probe_store(store)
        finally:
            await store.close()

    report = asyncio.run(probe())
    assert report.conditional_delete is s3_endpoint.conditional_delete
    return report


def _url(bucket: str) -> str:
    return f"s3://{bucket}/{secrets.token_hex(8)}"


class TestObjectStoreOnS3(BackendConformance):
    """The conformance suite, once per S3 server (``[moto]``, ``[localstack]``)."""

    @pytest.fixture
    async def backend(
        self, clock: ManualClock, s3_endpoint: S3Endpoint, s3_shared_bucket: str, s3_probe: ProbeReport
    ) -> AsyncIterator[ObjectStoreBackend]:
        backend = ObjectStoreBackend.from_url(
            _url(s3_shared_bucket),
            clock=clock,
            verify_conditional_writes=False,
            **s3_endpoint.storage_options(),
        )
        backend.store.supports_conditional_delete = s3_probe.conditional_delete
        async with backend:
            yield backend


async def test_delete_snapshot_takes_the_path_the_server_supports(
    s3_endpoint: S3Endpoint, s3_shared_bucket: str
) -> None:
    """Opened as users open it (probed on first use): moto deletes the snapshot with DeleteObject
    If-Match; LocalStack (501) falls back to an unconditional delete, never sending a conditional
    one after the probe found it missing."""
    store = CountingStore(
        S3Store(f"{s3_shared_bucket}/{secrets.token_hex(8)}", **s3_endpoint.storage_options())
    )
    async with ObjectStoreBackend(store) as backend:
        await backend.verify_store()
        assert store.supports_conditional_delete is s3_endpoint.conditional_delete
        for n in range(3):
            snap = WorkflowSnapshot(f"doomed/{n}", "flow")
            snap.update_position(AtTask("a"))
            await backend.save_snapshot(snap)
            assert await backend.claim_task(snap.instance_id, "a", "w", None) is not None
        store.reset()
        for n in range(3):
            await backend.delete_snapshot(f"doomed/{n}")
        expected = 3 if s3_endpoint.conditional_delete else 0
        assert store.counts["delete_if_version"] == expected
        assert await backend.list_snapshots() == []
        assert await backend.list_claims() == []
        assert await backend.find_available_tasks("w", 10) == []
        # What stays: the layout marker and each claim object, released (a claim is never
        # deleted: it holds its task's fencing-token high-water mark across re-creates).
        claims = [layout.claim_key(layout.encode_id(f"doomed/{n}"), "a") for n in range(3)]
        assert sorted([o.key async for o in store.list("")]) == sorted([*claims, layout.MARKER])
        for key in claims:
            found = await store.get(key)
            assert found is not None and orjson.loads(found.data)["worker_id"] is None
