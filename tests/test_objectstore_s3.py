"""ObjectStoreBackend on S3: the backend conformance suite against moto_server and LocalStack.

Both servers are real processes started once per session (``tests/servers/s3.py``). Each test gets
an empty store: one bucket per server, a fresh random prefix per test. LocalStack answers 501 to a
conditional DeleteObject, so there the probe switches the store to the backend's fallback; the
fixture checks after every test that the fallback (and only there) was the path taken.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from objstore_wfp import ManualClock, ObjectStoreBackend, WorkflowSnapshot
from objstore_wfp.model import AtTask
from objstore_wfp.stores.counting import CountingStore
from objstore_wfp.stores.s3 import S3Store
from objstore_wfp.testing import BackendConformance
from tests.servers.s3 import S3Endpoint


@pytest.fixture(scope="session")
def s3_shared_bucket(s3_endpoint: S3Endpoint) -> str:
    """One bucket per server for the whole session; tests separate themselves by prefix."""
    return s3_endpoint.create_bucket("conf")


def _url(bucket: str) -> str:
    return f"s3://{bucket}/{secrets.token_hex(8)}"


class TestObjectStoreOnS3(BackendConformance):
    """The conformance suite, once per S3 server (``[moto]``, ``[localstack]``)."""

    @pytest.fixture
    async def backend(
        self, clock: ManualClock, s3_endpoint: S3Endpoint, s3_shared_bucket: str
    ) -> AsyncIterator[ObjectStoreBackend]:
        backend = ObjectStoreBackend.from_url(
            _url(s3_shared_bucket), clock=clock, **s3_endpoint.storage_options()
        )
        async with backend:
            yield backend
        # Tests that fail before any I/O (bad ids) never open the store; the others must have
        # taken the delete path this server supports.
        if backend._verified:
            assert backend.store.supports_conditional_delete is s3_endpoint.conditional_delete


async def test_delete_snapshot_takes_the_path_the_server_supports(
    s3_endpoint: S3Endpoint, s3_shared_bucket: str
) -> None:
    """moto deletes the snapshot with DeleteObject If-Match; LocalStack (501) falls back to an
    unconditional delete, never sending a conditional one after the probe found it missing."""
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
        assert [o.key async for o in store.list("")] == []
