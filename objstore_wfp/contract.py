"""``PersistentBackend``: the one async interface every backend implements.

The authoritative semantics live in ``docs/contract.md``; :mod:`objstore_wfp.testing` checks
them. Every method validates its identifiers before any I/O and raises only
:class:`~objstore_wfp.errors.BackendError` subclasses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import timedelta
from types import TracebackType

from objstore_wfp.model import AvailableTask, CancellationRequest, TaskClaim, WorkflowSnapshot


class PersistentBackend(ABC):
    """Persistence for workflow snapshots, task results, task claims and cancellation.

    Backends are async context managers; leaving the block calls :meth:`close`::

        async with InMemoryBackend() as backend:
            await backend.save_snapshot(WorkflowSnapshot("id", "hash"))
    """

    # -- snapshots -------------------------------------------------------------------------
    @abstractmethod
    async def save_snapshot(self, snapshot: WorkflowSnapshot) -> str:
        """Write ``snapshot``; return the new version and set ``snapshot.version``.

        With ``snapshot.version is None`` the snapshot is created or overwritten; otherwise the
        write is a compare-and-swap that succeeds only if the stored version is unchanged.
        Raises ``ConflictError`` if the version moved or the stored snapshot is terminal, and
        ``ConflictError`` if the snapshot's results disagree with an already recorded output.
        """

    @abstractmethod
    async def load_snapshot(self, instance_id: str) -> WorkflowSnapshot:
        """Return the snapshot with every recorded result and ``version`` set.
        Raises ``NotFoundError`` or ``SerializationError``."""

    @abstractmethod
    async def delete_snapshot(self, instance_id: str) -> None:
        """Remove the instance and everything of it (results, claims, signals, index entries).
        Raises ``NotFoundError``."""

    @abstractmethod
    async def list_snapshots(self) -> list[str]:
        """Every instance id, sorted."""

    # -- task results ----------------------------------------------------------------------
    @abstractmethod
    async def save_task_result(
        self, instance_id: str, task_id: str, output: bytes, *, claim: TaskClaim | None = None
    ) -> None:
        """Record one task's output; the first recorded output wins.

        Saving the same output again is a no-op; a different one raises ``ConflictError``.
        With ``claim``, raises ``ClaimLostError`` unless that claim is still the live holding.
        Raises ``NotFoundError`` when the instance does not exist.
        """

    @abstractmethod
    async def load_task_result(self, instance_id: str, task_id: str) -> bytes | None:
        """The recorded output of one task (also after Completed/Failed), or ``None``."""

    # -- claims ----------------------------------------------------------------------------
    @abstractmethod
    async def claim_task(
        self, instance_id: str, task_id: str, worker_id: str, ttl: timedelta | None
    ) -> TaskClaim | None:
        """Take the task's lease, or return ``None`` while any live claim exists (claims are not
        re-entrant). An expired claim is taken over with a higher fencing token."""

    @abstractmethod
    async def release_task_claim(self, instance_id: str, task_id: str, worker_id: str) -> None:
        """Give the lease back; the task is claimable at once.
        Raises ``NotFoundError`` (no claim) or ``ClaimLostError`` (another worker holds it)."""

    @abstractmethod
    async def extend_task_claim(
        self, instance_id: str, task_id: str, worker_id: str, additional_duration: timedelta
    ) -> TaskClaim:
        """Renew the lease to ``now + additional_duration`` (a claim without TTL stays without)
        and return it. Raises ``NotFoundError`` or ``ClaimLostError``."""

    @abstractmethod
    async def find_available_tasks(self, worker_id: str, limit: int) -> list[AvailableTask]:
        """At most ``limit`` claimable tasks: most urgent priority first, then oldest-ready."""

    # -- cancellation ----------------------------------------------------------------------
    @abstractmethod
    async def request_cancellation(self, instance_id: str, reason: str, requested_by: str) -> None:
        """Store a cancellation request (a no-op on an already cancelled instance).
        Raises ``NotFoundError`` or ``CannotCancelError`` (Completed or Failed)."""

    @abstractmethod
    async def get_cancellation_request(self, instance_id: str) -> CancellationRequest | None:
        """The pending request, or ``None``."""

    @abstractmethod
    async def clear_cancellation_request(self, instance_id: str) -> None:
        """Remove the pending request, if any."""

    @abstractmethod
    async def check_and_cancel(self, instance_id: str, interrupted_at_task: str | None = None) -> bool:
        """If a request is pending and the instance is in progress, atomically make it
        ``Cancelled`` (keeping completed tasks), clear the request and return ``True``."""

    # -- lifecycle -------------------------------------------------------------------------
    async def close(self) -> None:
        """Release connections and other resources. The default does nothing."""

    async def __aenter__(self) -> PersistentBackend:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
