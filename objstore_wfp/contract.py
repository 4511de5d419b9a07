"""``PersistentBackend``: the one async interface every backend implements.

The semantics live in ``docs/semantics.md`` and the README's guarantees;
:mod:`objstore_wfp.testing` checks them. Every method validates its identifiers before any I/O and raises only
:class:`~objstore_wfp.errors.BackendError` subclasses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType

from objstore_wfp.errors import ConflictError, NotFoundError
from objstore_wfp.model import (
    AvailableTask,
    CancellationRequest,
    PauseRequest,
    Signal,
    TaskClaim,
    WorkflowSnapshot,
)


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
        """At most ``limit`` claimable tasks: most urgent priority first, then oldest-ready.

        Never a task of a paused instance or of one with a pending cancellation request. The
        step of an ``AtDelay`` is offered from ``wake_at`` on; the step of an ``AtSignal`` once a
        signal of its name is pending or from ``timeout_at`` on (times judged with the backend's
        clock; a due wait counts as ready from its due time)."""

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

    # -- signals ---------------------------------------------------------------------------
    @abstractmethod
    async def send_signal(self, instance_id: str, name: str, payload: bytes) -> Signal:
        """Buffer a signal for the instance and return it (``seq`` larger than that of any
        signal sent to it since it was created, ``sent_at`` the backend clock's now). It stays pending until a
        step waiting at ``AtSignal(name)`` takes it with :meth:`deliver_signal`, oldest first.
        ``name`` follows the identifier rules (``InvalidIdentifierError``) and ``payload`` must be
        bytes (``InvalidArgumentError``), both checked before any I/O. Raises ``NotFoundError``,
        and ``ConflictError`` when the instance is Completed, Failed or Cancelled."""

    @abstractmethod
    async def list_signals(self, instance_id: str, name: str | None = None) -> list[Signal]:
        """The pending (not yet delivered) signals of the instance, of one ``name`` or all, oldest
        (lowest ``seq``) first. Raises ``NotFoundError``."""

    @abstractmethod
    async def deliver_signal(self, claim: TaskClaim) -> bytes | None:
        """Give the step ``claim`` holds, waiting at ``AtSignal(claim.task_id, name, ...)``, its
        signal: if the step already has a recorded result, return that (a retry after a crash);
        else, atomically and fenced by the claim, consume the oldest pending signal of ``name``,
        record its payload as the step's result and return it. ``None``: none is pending (the
        caller takes the timeout path and records its own output). A signal is delivered to one
        step exactly once. Raises ``ClaimLostError``, ``NotFoundError``, and ``ConflictError``
        when the instance is final or does not stand at that ``AtSignal``."""

    # -- pause -----------------------------------------------------------------------------
    @abstractmethod
    async def pause_instance(self, instance_id: str, reason: str, requested_by: str) -> None:
        """Offer nothing of the instance until :meth:`resume_instance`. Takes effect between
        tasks: a running task still records its result and the workflow may advance; nothing new
        is offered. Pausing a paused instance keeps the first request. ``reason`` and
        ``requested_by`` are free text. Raises ``NotFoundError``, and ``CannotPauseError`` when
        the instance is Completed, Failed or Cancelled (cancelling a paused instance works, and
        a final instance has no pause request)."""

    @abstractmethod
    async def resume_instance(self, instance_id: str) -> None:
        """Remove the pause request: the instance's work is offered again where it stood (a due
        wait at once). A no-op when not paused. Raises ``NotFoundError``."""

    @abstractmethod
    async def get_pause_request(self, instance_id: str) -> PauseRequest | None:
        """The standing pause request, or ``None`` (also for an unknown instance)."""

    # -- optional capabilities, with honest defaults -----------------------------------------
    #: Whether :meth:`create_snapshot` is one atomic create-if-absent. The default is not, so
    #: callers that need exactly-one-creator (``Client.submit``) serialise creators themselves.
    supports_create: bool = False

    async def create_snapshot(self, snapshot: WorkflowSnapshot) -> str:
        """Save ``snapshot`` as a new instance; ``ConflictError`` if the id exists. The default
        checks, then saves: atomic only where ``supports_create`` is true."""
        try:
            await self.load_snapshot(snapshot.instance_id)
        except NotFoundError:
            return await self.save_snapshot(snapshot)
        raise ConflictError(f"instance {snapshot.instance_id!r} already exists")

    async def record_and_advance(
        self,
        claim: TaskClaim,
        output: bytes | None,
        advance: Callable[[WorkflowSnapshot], bool],
        *,
        reserve: timedelta | None = None,
        take: int = 1,
    ) -> tuple[WorkflowSnapshot, list[str]]:
        """Record ``output`` for ``claim``'s task (fenced by the claim; an output already
        recorded by another execution wins and is kept; ``None`` records nothing, e.g. to mark
        the workflow failed under the claim), then let ``advance`` move the workflow and save
        it by compare-and-swap. Returns the saved snapshot and up to ``take`` tasks it
        made ready that the caller may claim next (none while the instance is paused).
        ``reserve`` asks the backend to keep those tasks out of other workers' polls for that
        long, where it can (an object store can; a poll then never offers a task its next
        holder is about to claim). Raises
        ``ClaimLostError``, ``NotFoundError``, and ``ConflictError`` when the instance is final
        without this task's output.

        The default is :meth:`save_task_result` followed by a load/advance/save loop (two
        writes, no reservation; with ``output=None`` the advance is not fenced; a read of the
        pause request when it made tasks ready); a backend may do all in one atomic write.
        """
        from objstore_wfp.runtime.cas import update_snapshot

        before: set[str] = set()
        try:
            if output is not None:
                await self.save_task_result(claim.instance_id, claim.task_id, output, claim=claim)
        except ConflictError:
            if await self.load_task_result(claim.instance_id, claim.task_id) is None:
                raise

        def mutate(snapshot: WorkflowSnapshot) -> bool:
            before.clear()
            before.update(snapshot.available_task_ids())
            return advance(snapshot)

        snapshot = await update_snapshot(self, claim.instance_id, mutate)
        fresh = [t for t in snapshot.available_task_ids() if t not in before]
        if fresh and await self.get_pause_request(claim.instance_id) is not None:
            return snapshot, []
        return snapshot, fresh[:take]

    async def claim_available(
        self,
        worker_id: str,
        limit: int,
        ttl: timedelta | None,
        accept: Callable[[str, str, str], bool] = lambda instance_id, task_id, definition_hash: True,
    ) -> list[tuple[AvailableTask, TaskClaim]]:
        """Find available tasks and claim them for ``worker_id`` with ``ttl``: up to ``limit``
        ``(task, claim)`` pairs, only of tasks for which ``accept(instance_id, task_id,
        definition_hash)`` holds. A worker's poll in one call; unlike :meth:`find_available_tasks` it need not
        return the very oldest tasks (a backend may spread workers over the ready ones).

        The default finds ``limit`` tasks and claims them in order."""
        found = await self.find_available_tasks(worker_id, limit)
        won = []
        for task in found:
            if not accept(task.instance_id, task.task_id, task.workflow_definition_hash):
                continue
            claim = await self.claim_task(task.instance_id, task.task_id, worker_id, ttl)
            if claim is not None:
                won.append((task, claim))
        return won

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
