"""A delete that is not atomic with a concurrent conditional write must not resurrect an
incarnation.

Found in CI (``test_replacing_while_workers_race`` on fake-gcs-server, 2026-11-30): a worker
recorded ``gen-1 by w0`` into the instance's next incarnation. fake-gcs-server serialises its
uploads, but a DELETE runs between an upload's ``ifGenerationMatch`` check and its write: about 1
in 400 conditional uploads racing a delete succeeded and left the deleted object in place (HTTP
200 to both; measured with 16 threads). The store then holds the old incarnation again, with
the late result, and the next ``save_snapshot`` of the id overwrites it, keeping its
incarnation, fences and results: the old worker's output lands in the new instance.

:class:`CheckThenWriteStore` models exactly that store (conditional writes serialised among
themselves, deletes not), so the interleaving is forced rather than waited for; the backend
must then refuse the late write, whichever operation made it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from objstore_wfp import (
    AtTask,
    ClaimLostError,
    NotFoundError,
    ObjectStoreBackend,
    TaskClaim,
    WorkflowSnapshot,
)
from objstore_wfp.backends import layout
from objstore_wfp.stores.memory import MemoryStore


class CheckThenWriteStore(MemoryStore):
    """A memory store without conditional delete whose ``put_if_version`` checks, then may be
    held (``hold``) before it writes; other conditional writes wait for it, deletes do not."""

    supports_conditional_delete = False

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self._writes = asyncio.Lock()
        self.hold: str | None = None  # the key whose next conditional write is held
        self.held = asyncio.Event()
        self.go = asyncio.Event()

    async def put_if_version(self, key: str, data: bytes, version: str) -> str | None:
        async with self._writes:
            found = await self.get(key)
            if found is None or found.version != version:
                return None
            if key == self.hold:
                self.hold = None
                self.held.set()
                await self.go.wait()
            return await self.put(key, data)

    async def put_if_absent(self, key: str, data: bytes) -> str | None:
        async with self._writes:
            return await super().put_if_absent(key, data)


def snapshot(data: bytes) -> WorkflowSnapshot:
    s = WorkflowSnapshot("x", "def", initial_input=data)
    s.update_position(AtTask("t"))
    return s


async def record(backend: ObjectStoreBackend, claim: TaskClaim) -> None:
    await backend.save_task_result("x", "t", b"old result", claim=claim)


async def record_and_advance(backend: ObjectStoreBackend, claim: TaskClaim) -> None:
    await backend.record_and_advance(claim, b"old result", lambda s: s.update_position(AtTask("u")) or True)


@pytest.mark.parametrize("write", [record, record_and_advance])
async def test_a_late_fenced_write_does_not_resurrect_the_deleted_incarnation(
    write: Callable[[ObjectStoreBackend, TaskClaim], Awaitable[None]],
) -> None:
    store = CheckThenWriteStore(f"nonatomic-{uuid.uuid4().hex}")
    backend = ObjectStoreBackend(store, verify_conditional_writes=False)
    await backend.save_snapshot(snapshot(b"gen-1"))
    claim = await backend.claim_task("x", "t", "w", timedelta(minutes=5))
    assert claim is not None

    store.hold = layout.snapshot_key(layout.encode_id("x"))
    late = asyncio.ensure_future(write(backend, claim))
    await asyncio.wait_for(store.held.wait(), 10)  # the write passed its check
    deleting = asyncio.ensure_future(backend.delete_snapshot("x"))
    await asyncio.sleep(0.05)  # the delete runs as far as it can while the write is held
    store.go.set()
    outcomes = await asyncio.gather(late, deleting, return_exceptions=True)
    assert all(o is None or isinstance(o, (ClaimLostError, NotFoundError)) for o in outcomes), outcomes

    with pytest.raises(NotFoundError):
        await backend.load_snapshot("x")
    assert "x" not in await backend.list_snapshots()
    await backend.save_snapshot(snapshot(b"gen-2"))
    assert await backend.load_task_result("x", "t") is None, "the deleted incarnation's result came back"
    assert (await backend.load_snapshot("x")).initial_input == b"gen-2"
    with pytest.raises(ClaimLostError):
        await backend.save_task_result("x", "t", b"old result", claim=claim)
