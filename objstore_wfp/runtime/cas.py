"""Read-modify-write of a snapshot by compare-and-swap, retried on conflict."""

from __future__ import annotations

from collections.abc import Callable

from objstore_wfp.backoff import CONTENTION
from objstore_wfp.contract import PersistentBackend
from objstore_wfp.errors import ConflictError
from objstore_wfp.model import WorkflowSnapshot

MAX_ATTEMPTS = 30


async def update_snapshot(
    backend: PersistentBackend, instance_id: str, mutate: Callable[[WorkflowSnapshot], bool]
) -> WorkflowSnapshot:
    """Load, let ``mutate`` change the snapshot (it returns whether it did), save by CAS; on
    ``ConflictError`` start again from a fresh load. A terminal snapshot is returned untouched.

    Gives up with ``ConflictError`` after ``MAX_ATTEMPTS`` lost races, which needs sustained
    contention on one instance far beyond what its few concurrent tasks produce.
    """
    for attempt in range(MAX_ATTEMPTS):
        snapshot = await backend.load_snapshot(instance_id)
        if snapshot.is_terminal or not mutate(snapshot):
            return snapshot
        try:
            await backend.save_snapshot(snapshot)
            return snapshot
        except ConflictError:
            await CONTENTION.sleep(attempt + 1)
    raise ConflictError(f"gave up updating {instance_id!r} after {MAX_ATTEMPTS} conflicting writes")
