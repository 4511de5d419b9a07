"""``Client``: submit workflows, read their status, wait for results, cancel, pause and resume
them, send them signals; ``SyncClient``: the same for code that is not async."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from objstore_wfp.contract import PersistentBackend
from objstore_wfp.errors import CannotCancelError, ClaimLostError, ConflictError, NotFoundError
from objstore_wfp.ids import validate_id
from objstore_wfp.model import Cancelled, Completed, Failed, PauseRequest, Signal, WorkflowSnapshot
from objstore_wfp.runtime.codec import Codec, JsonCodec
from objstore_wfp.runtime.errors import InstanceExistsError, WorkflowCancelledError, WorkflowFailedError
from objstore_wfp.runtime.flow import RESERVED_PREFIX, Child, Flow, Registry, child_instance_id
from objstore_wfp.runtime.progress import advance, describe_position, step_id
from objstore_wfp.sync import BackgroundLoop, SyncBackend

IfExists = Literal["error", "return_existing", "replace"]

#: Claimed (as a task id) while a submit checks for and writes an instance, so that concurrent
#: submits of one id are serialised; flows cannot use ids with this prefix. The claim is not one
#: of the instance itself but of a lock instance of its own (:func:`submit_lock_instance`): a
#: ``replace`` deletes the instance with all its claims, and must not free its lock doing so.
SUBMIT_LOCK = f"{RESERVED_PREFIX}submit"
SUBMIT_LOCK_TTL = timedelta(seconds=30)
#: Create attempts of a ``replace`` submit racing other submits of the same id.
SUBMIT_ATTEMPTS = 16


@dataclass(frozen=True)
class WorkflowStatus:
    """What a client can tell about one instance. ``output`` is the decoded final output once
    completed; ``error`` the failure or cancellation reason; ``position`` says what it waits
    for (a task, a delay until when, a signal and its timeout); ``paused`` the pause request
    of a paused instance."""

    instance_id: str
    definition_hash: str
    flow: str | None
    state: Literal["in_progress", "completed", "failed", "cancelled"]
    position: str
    completed_tasks: tuple[str, ...]
    output: Any
    error: str | None
    priority: int
    created_at: datetime
    updated_at: datetime
    paused: PauseRequest | None = None

    @property
    def is_terminal(self) -> bool:
        return self.state != "in_progress"


def submit_lock_instance(instance_id: str) -> str:
    """The instance id whose ``SUBMIT_LOCK`` claim serialises submits of ``instance_id``:
    ``@submit/<32 hex digits>`` (a digest, so that any legal id fits the 512-byte limit). No
    snapshot is ever saved under it."""
    digest = hashlib.blake2b(instance_id.encode(), digest_size=16).hexdigest()
    return f"{SUBMIT_LOCK}/{digest}"


class Client:
    """Submits and follows workflow instances. ``flows`` are only needed to name flows in
    :meth:`status`; :meth:`submit` takes the flow itself."""

    def __init__(
        self, backend: PersistentBackend, flows: Iterable[Flow] = (), *, codec: Codec | None = None
    ) -> None:
        self.backend = backend
        self.registry = Registry(flows)
        self.codec: Codec = codec or JsonCodec()
        self.client_id = f"client-{uuid.uuid4().hex[:8]}"

    async def submit(
        self,
        flow: Flow,
        input: Any = None,
        *,
        instance_id: str | None = None,
        priority: int = 3,
        if_exists: IfExists = "error",
    ) -> str:
        """Store a new instance of ``flow`` ready to run its first task; return its id (default
        ``<flow name>-<random hex>``).

        With an id that already exists: ``"error"`` raises :class:`InstanceExistsError`,
        ``"return_existing"`` leaves the stored instance alone and returns its id, ``"replace"``
        deletes it (results, claims, everything) and submits anew. Of concurrent submits of one
        id exactly one creates the instance: through the backend's atomic create where it has one
        (``supports_create``), else serialised by a claim.
        """
        if if_exists not in ("error", "return_existing", "replace"):
            raise ValueError(f"if_exists must be 'error', 'return_existing' or 'replace', not {if_exists!r}")
        instance_id = validate_id(instance_id or f"{flow.name}-{uuid.uuid4().hex[:12]}", "instance_id")
        snapshot = WorkflowSnapshot(
            instance_id, flow.definition_hash, initial_input=self.codec.encode(input), priority=priority
        )
        advance(flow, snapshot, self.codec)
        if self.backend.supports_create:
            return await self._create(snapshot, if_exists)
        lock_id = submit_lock_instance(instance_id)
        lock = await self._lock(lock_id)
        try:
            try:
                await self.backend.load_snapshot(instance_id)
                exists = True
            except NotFoundError:
                exists = False
            if exists:
                if if_exists == "error":
                    raise InstanceExistsError(f"instance {instance_id!r} already exists")
                if if_exists == "return_existing":
                    return instance_id
                await self.backend.delete_snapshot(instance_id)
            await self.backend.save_snapshot(snapshot)
            return instance_id
        finally:
            if lock:
                # NotFound/ClaimLost: it expired (and may have been taken over).
                with contextlib.suppress(NotFoundError, ClaimLostError):
                    await self.backend.release_task_claim(lock_id, SUBMIT_LOCK, self.client_id)

    async def _create(self, snapshot: WorkflowSnapshot, if_exists: IfExists) -> str:
        """Submit through the backend's atomic create (two writes on object stores): of
        concurrent submits of one id exactly one creates it, without a lock."""
        instance_id = snapshot.instance_id
        for _ in range(SUBMIT_ATTEMPTS):
            try:
                await self.backend.create_snapshot(snapshot)
                return instance_id
            except ConflictError:
                if if_exists == "error":
                    raise InstanceExistsError(f"instance {instance_id!r} already exists") from None
                if if_exists == "return_existing":
                    return instance_id
            with contextlib.suppress(NotFoundError):  # a concurrent replace deleted it first
                await self.backend.delete_snapshot(instance_id)
        raise ConflictError(f"instance {instance_id!r}: gave up replacing it after {SUBMIT_ATTEMPTS} tries")

    async def _lock(self, lock_id: str) -> bool:
        deadline = time.monotonic() + SUBMIT_LOCK_TTL.total_seconds()
        while time.monotonic() < deadline:
            if await self.backend.claim_task(lock_id, SUBMIT_LOCK, self.client_id, SUBMIT_LOCK_TTL):
                return True
            await asyncio.sleep(0.05)
        # A submitter that died holding the lock lets it expire; by now it has.
        return False

    async def status(self, instance_id: str) -> WorkflowStatus:
        """The instance's state; raises ``NotFoundError`` for an unknown id."""
        snapshot = await self.backend.load_snapshot(instance_id)
        paused = None if snapshot.is_terminal else await self.backend.get_pause_request(instance_id)
        return self.describe(snapshot, paused)

    def describe(self, snapshot: WorkflowSnapshot, paused: PauseRequest | None = None) -> WorkflowStatus:
        """A :class:`WorkflowStatus` for a loaded snapshot (and its pause request, if paused)."""
        flow = self.registry.get(snapshot.definition_hash)
        state = snapshot.state
        output: Any = None
        error: str | None = None
        if isinstance(state, Completed):
            name: Literal["in_progress", "completed", "failed", "cancelled"] = "completed"
            output = self.codec.decode(state.final_output)
        elif isinstance(state, Failed):
            name, error = "failed", state.error
        elif isinstance(state, Cancelled):
            name, error = "cancelled", state.reason
        else:
            name = "in_progress"
        return WorkflowStatus(
            instance_id=snapshot.instance_id,
            definition_hash=snapshot.definition_hash,
            flow=flow.name if flow else None,
            state=name,
            position=describe_position(snapshot.position),
            completed_tasks=tuple(snapshot.completed_tasks),
            output=output,
            error=error,
            priority=snapshot.priority,
            created_at=snapshot.created_at,
            updated_at=snapshot.updated_at,
            paused=paused,
        )

    async def result(
        self, instance_id: str, *, timeout: float | None = None, poll_interval: float = 0.2
    ) -> Any:
        """Wait for the instance to finish and return its decoded output. Raises
        :class:`WorkflowFailedError`, :class:`WorkflowCancelledError`, or ``TimeoutError``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            snapshot = await self.backend.load_snapshot(instance_id)
            state = snapshot.state
            if isinstance(state, Completed):
                return self.codec.decode(state.final_output)
            if isinstance(state, Failed):
                raise WorkflowFailedError(instance_id, state.error)
            if isinstance(state, Cancelled):
                raise WorkflowCancelledError(instance_id, state.reason)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"workflow {instance_id!r} still running after {timeout} s")
            await asyncio.sleep(poll_interval)

    async def cancel(
        self, instance_id: str, reason: str = "cancelled by client", requested_by: str = ""
    ) -> bool:
        """Cancel the instance now: it becomes ``Cancelled`` (keeping completed tasks) and no
        further task of it is offered. A task already running finishes, but its result is refused
        (a request placed directly through the backend is applied by the task's worker at its
        next heartbeat, which then stops the task). Returns ``False`` if it was
        already cancelled; raises ``CannotCancelError`` if it completed or failed.

        Child flows it started (:meth:`Flow.child`, when this client knows the flow) are
        cancelled with it, and theirs in turn; one that already ended is left as it is. A child
        whose start was still running when the parent was cancelled is not found: the parent
        refuses that start's result, and the child runs to its end alone."""
        by = requested_by or self.client_id
        await self.backend.request_cancellation(instance_id, reason, by)
        snapshot = await self.backend.load_snapshot(instance_id)
        at = step_id(snapshot.position)
        cancelled = await self.backend.check_and_cancel(instance_id, interrupted_at_task=at)
        flow = self.registry.get(snapshot.definition_hash)
        for task_id in snapshot.completed_tasks if flow is not None else ():
            place = flow.place(task_id) if flow is not None else None
            if place is not None and isinstance(place.unit, Child) and not place.child_done:
                with contextlib.suppress(NotFoundError, CannotCancelError):
                    await self.cancel(child_instance_id(instance_id, place.unit_id), reason, by)
        return cancelled

    async def pause(self, instance_id: str, reason: str = "paused by client", requested_by: str = "") -> None:
        """Pause the instance: from now on none of its tasks is offered to workers (a task
        already running finishes and is recorded; the position moves on but waits there).
        Idempotent. Delays and signal timeouts keep counting while paused: one that came due is
        taken up after :meth:`unpause`. Raises ``NotFoundError``, and ``CannotPauseError``
        for a completed, failed or cancelled instance."""
        await self.backend.pause_instance(instance_id, reason, requested_by or self.client_id)

    async def unpause(self, instance_id: str) -> None:
        """Resume a paused instance where it stood; nothing happens if it is not paused."""
        await self.backend.resume_instance(instance_id)

    async def send_signal(self, instance_id: str, name: str, value: Any = None) -> Signal:
        """Send the signal ``name`` with ``value`` (encoded by the codec) to the instance; the
        first ``wait_for_signal(name)`` step that reaches it, or already waits, gets it (exactly
        once, oldest first); until then it is kept. Returns the stored :class:`Signal`. Raises
        ``NotFoundError``, ``ConflictError`` if the instance is final, ``InvalidIdentifierError``
        for a bad name, ``SerializationError`` for a value the codec cannot encode."""
        return await self.backend.send_signal(instance_id, name, self.codec.encode(value))


class SyncClient:
    """:class:`Client` for code that is not async: the same methods, arguments, results and
    errors, each blocking until done (see :mod:`objstore_wfp.sync`).

    ``backend`` is a :class:`~objstore_wfp.sync.SyncBackend` (whose loop the client shares) or
    an async backend (then the client runs it on a :class:`~objstore_wfp.sync.BackgroundLoop`
    of its own, closed by :meth:`close`)::

        backend = SyncBackend.from_url("s3://bucket/workflows")
        client = SyncClient(backend, [flow])
        instance_id = client.submit(flow, 5)
        print(client.result(instance_id, timeout=60))
    """

    def __init__(
        self,
        backend: PersistentBackend | SyncBackend,
        flows: Iterable[Flow] = (),
        *,
        codec: Codec | None = None,
    ) -> None:
        if isinstance(backend, SyncBackend):
            self.loop, self._owns_loop = backend.loop, False
            backend = backend.backend
        else:
            self.loop, self._owns_loop = BackgroundLoop(), True
        self.client = Client(backend, flows, codec=codec)

    def submit(
        self,
        flow: Flow,
        input: Any = None,
        *,
        instance_id: str | None = None,
        priority: int = 3,
        if_exists: IfExists = "error",
    ) -> str:
        """See :meth:`Client.submit`."""
        return self.loop.run(
            self.client.submit(flow, input, instance_id=instance_id, priority=priority, if_exists=if_exists)
        )

    def status(self, instance_id: str) -> WorkflowStatus:
        """See :meth:`Client.status`."""
        return self.loop.run(self.client.status(instance_id))

    def result(self, instance_id: str, *, timeout: float | None = None, poll_interval: float = 0.2) -> Any:
        """See :meth:`Client.result`."""
        return self.loop.run(self.client.result(instance_id, timeout=timeout, poll_interval=poll_interval))

    def cancel(self, instance_id: str, reason: str = "cancelled by client", requested_by: str = "") -> bool:
        """See :meth:`Client.cancel`."""
        return self.loop.run(self.client.cancel(instance_id, reason, requested_by))

    def pause(self, instance_id: str, reason: str = "paused by client", requested_by: str = "") -> None:
        """See :meth:`Client.pause`."""
        self.loop.run(self.client.pause(instance_id, reason, requested_by))

    def unpause(self, instance_id: str) -> None:
        """See :meth:`Client.unpause`."""
        self.loop.run(self.client.unpause(instance_id))

    def send_signal(self, instance_id: str, name: str, value: Any = None) -> Signal:
        """See :meth:`Client.send_signal`."""
        return self.loop.run(self.client.send_signal(instance_id, name, value))

    def close(self) -> None:
        """Stop the client's own loop, if it made one (a shared one belongs to its backend)."""
        if self._owns_loop:
            self.loop.close()
