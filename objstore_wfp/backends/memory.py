"""``InMemoryBackend``: the reference implementation of the contract, for tests and examples.

One lock guards everything, so the backend is safe under asyncio tasks and threads. Snapshots
are stored encoded and decoded on every load, so callers never share mutable state with it and
every saved snapshot is known to serialize.

Incarnations (docs/semantics.md): every save that creates an instance (first save, or save after
a delete) draws a new incarnation number; overwrites and compare-and-swap saves keep it. A claim
records the incarnation current when it was taken (``None``: no snapshot existed) and is dead for
any other. Claims are never forgotten, only released, so a task's fencing token keeps growing
across delete and re-create.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from objstore_wfp.backends.validation import (
    check_claim,
    check_claim_for,
    check_duration,
    check_ids,
    check_limit,
    check_optional_task_id,
    check_output,
    check_payload,
    check_snapshot,
    check_text,
    expiry,
)
from objstore_wfp.clock import Clock, SystemClock
from objstore_wfp.contract import PersistentBackend
from objstore_wfp.errors import (
    CannotCancelError,
    CannotPauseError,
    ClaimLostError,
    ConflictError,
    NotFoundError,
)
from objstore_wfp.ids import validate_id
from objstore_wfp.model import (
    AtDelay,
    AtSignal,
    AvailableTask,
    CancellationRequest,
    Cancelled,
    Completed,
    Failed,
    InProgress,
    PauseRequest,
    Signal,
    TaskClaim,
    TaskResult,
    WorkflowSnapshot,
)
from objstore_wfp.model.codec import JSON, Reader, snapshot_from_reader, snapshot_to_json


@dataclass
class _Instance:
    doc: JSON  # the snapshot's JSON without results
    results: dict[str, bytes]
    version: str
    incarnation: int
    ready_at: dict[str, datetime] = field(default_factory=dict)
    cancellation: CancellationRequest | None = None
    pause: PauseRequest | None = None
    signals: list[Signal] = field(default_factory=list)  # pending, oldest first
    last_seq: int = 0
    #: When the workflow reached the wait it stands at (a signal that came earlier is ready
    #: from then on).
    waiting_since: datetime | None = None

    def snapshot(self) -> WorkflowSnapshot:
        results = {t: TaskResult(t, out) for t, out in self.results.items()}
        return snapshot_from_reader(Reader(self.doc, "memory snapshot"), results, self.version)

    def pending(self, name: str) -> Signal | None:
        return next((s for s in self.signals if s.name == name), None)

    def due_wait(self, now: datetime) -> tuple[str, datetime] | None:
        """The step of the wait the workflow stands at and the time it became ready, if due."""
        wait = self.snapshot().waiting_on()
        if isinstance(wait, AtDelay):
            return (wait.step_id, wait.wake_at) if now >= wait.wake_at else None
        if isinstance(wait, AtSignal):
            signal = self.pending(wait.signal_name)
            if signal is not None:
                assert self.waiting_since is not None  # set by the save that reached the wait
                return wait.step_id, max(signal.sent_at, self.waiting_since)
            if wait.timeout_at is not None and now >= wait.timeout_at:
                return wait.step_id, wait.timeout_at
        return None


@dataclass
class _Claim:
    holder: str | None
    token: int
    incarnation: int | None
    claimed_at: datetime
    expires_at: datetime | None
    #: When the lease ends on the backend clock's ``monotonic()`` (wall clocks may step).
    ends: float | None

    def live(self, now: float, incarnation: int | None) -> bool:
        """Held, unexpired at ``now`` (monotonic seconds), and taken in ``incarnation`` (the
        instance's current one)."""
        return (
            self.holder is not None
            and self.incarnation == incarnation
            and (self.ends is None or now < self.ends)
        )


class InMemoryBackend(PersistentBackend):
    """Everything in a dict, nothing on disk.

    >>> import asyncio
    >>> from datetime import timedelta
    >>> from objstore_wfp import AtTask, WorkflowSnapshot
    >>> async def main():
    ...     backend = InMemoryBackend()
    ...     snap = WorkflowSnapshot("order-1", "flow-v1", initial_input=b"42")
    ...     snap.update_position(AtTask("charge"))
    ...     await backend.save_snapshot(snap)
    ...     [task] = await backend.find_available_tasks("worker-a", limit=10)
    ...     ttl = timedelta(seconds=30)
    ...     claim = await backend.claim_task(task.instance_id, task.task_id, "worker-a", ttl)
    ...     await backend.save_task_result("order-1", "charge", b"paid", claim=claim)
    ...     return task.input, claim.token, await backend.load_task_result("order-1", "charge")
    >>> asyncio.run(main())
    (b'42', 1, b'paid')
    """

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._instances: dict[str, _Instance] = {}
        self._claims: dict[tuple[str, str], _Claim] = {}
        self._versions = itertools.count(1)
        self._incarnations = itertools.count(1)

    def _next_version(self) -> str:
        return str(next(self._versions))

    def _incarnation(self, instance_id: str) -> int | None:
        record = self._instances.get(instance_id)
        return record.incarnation if record is not None else None

    def _get(self, instance_id: str) -> _Instance:
        record = self._instances.get(instance_id)
        if record is None:
            raise NotFoundError(f"no snapshot for instance {instance_id!r}")
        return record

    # -- snapshots -------------------------------------------------------------------------
    async def save_snapshot(self, snapshot: WorkflowSnapshot) -> str:
        check_snapshot(snapshot)
        doc = snapshot_to_json(snapshot)
        del doc["results"]
        offered = {t: r.output for t, r in snapshot.completed_tasks.items()}
        with self._lock:
            now = self._clock.now()
            old = self._instances.get(snapshot.instance_id)
            if old is not None and old.snapshot().is_terminal:
                raise ConflictError(f"instance {snapshot.instance_id!r} is terminal; its state is final")
            if snapshot.version is not None and (old is None or old.version != snapshot.version):
                raise ConflictError(
                    f"instance {snapshot.instance_id!r} moved: expected version {snapshot.version!r}, "
                    f"found {old.version if old else None!r}"
                )
            results = dict(old.results) if old else {}
            for task_id, output in offered.items():
                if results.setdefault(task_id, output) != output:
                    raise ConflictError(
                        f"task {task_id!r} of {snapshot.instance_id!r} already has another output"
                    )
            record = _Instance(
                doc,
                results,
                self._next_version(),
                old.incarnation if old else next(self._incarnations),
                cancellation=old.cancellation if old else None,
                pause=old.pause if old and not snapshot.is_terminal else None,
                signals=old.signals if old else [],
                last_seq=old.last_seq if old else 0,
            )
            previously_ready = old.ready_at if old else {}
            stored = record.snapshot()
            record.ready_at = {t: previously_ready.get(t, now) for t in stored.available_task_ids()}
            same_wait = old is not None and old.snapshot().waiting_on() == stored.waiting_on()
            if stored.waiting_on() is not None:
                record.waiting_since = old.waiting_since if same_wait and old else now
            self._instances[snapshot.instance_id] = record
            snapshot.version = record.version
            return record.version

    async def load_snapshot(self, instance_id: str) -> WorkflowSnapshot:
        check_ids(instance_id)
        with self._lock:
            return self._get(instance_id).snapshot()

    async def delete_snapshot(self, instance_id: str) -> None:
        check_ids(instance_id)
        with self._lock:
            self._get(instance_id)
            del self._instances[instance_id]
            # Released, not forgotten: the next claim continues from the token high-water mark.
            for (claimed_instance, _), claim in self._claims.items():
                if claimed_instance == instance_id:
                    claim.holder = None

    async def list_snapshots(self) -> list[str]:
        with self._lock:
            return sorted(self._instances)

    # -- task results ----------------------------------------------------------------------
    async def save_task_result(
        self, instance_id: str, task_id: str, output: bytes, *, claim: TaskClaim | None = None
    ) -> None:
        check_ids(instance_id, task_id)
        data = check_output(output)
        check_claim_for(claim, instance_id, task_id)
        with self._lock:
            record = self._get(instance_id)
            if claim is not None:
                self._check_holding(claim, record.incarnation)
            recorded = record.results.get(task_id)
            if recorded is not None:
                if recorded != data:
                    raise ConflictError(f"task {task_id!r} of {instance_id!r} already has another output")
                return
            snapshot = record.snapshot()
            if snapshot.is_terminal:
                raise ConflictError(f"instance {instance_id!r} is terminal; its state is final")
            record.results[task_id] = data
            record.ready_at.pop(task_id, None)
            record.version = self._next_version()

    def _check_holding(self, claim: TaskClaim, incarnation: int) -> None:
        stored = self._claims.get((claim.instance_id, claim.task_id))
        now = self._clock.monotonic()
        if (
            stored is None
            or stored.holder != claim.worker_id
            or stored.token != claim.token
            or not stored.live(now, incarnation)
        ):
            raise ClaimLostError(
                f"worker {claim.worker_id!r} no longer holds task {claim.task_id!r} of "
                f"{claim.instance_id!r} with token {claim.token}"
            )

    async def load_task_result(self, instance_id: str, task_id: str) -> bytes | None:
        check_ids(instance_id, task_id)
        with self._lock:
            return self._get(instance_id).results.get(task_id)

    # -- claims ----------------------------------------------------------------------------
    async def claim_task(
        self, instance_id: str, task_id: str, worker_id: str, ttl: timedelta | None
    ) -> TaskClaim | None:
        check_ids(instance_id, task_id, worker_id)
        check_duration(ttl, "ttl", optional=True)
        with self._lock:
            now = self._clock.now()
            ticks = self._clock.monotonic()
            key = (instance_id, task_id)
            old = self._claims.get(key)
            incarnation = self._incarnation(instance_id)
            if old is not None and old.live(ticks, incarnation):
                return None
            claim = _Claim(
                worker_id,
                old.token + 1 if old else 1,
                incarnation,
                now,
                expiry(now, ttl) if ttl is not None else None,
                ticks + ttl.total_seconds() if ttl is not None else None,
            )
            self._claims[key] = claim
            takeover = old is not None and old.incarnation == incarnation
            return TaskClaim(
                instance_id, task_id, worker_id, now, claim.expires_at, claim.token, takeover=takeover
            )

    def _held_by(self, instance_id: str, task_id: str, worker_id: str) -> _Claim:
        claim = self._claims.get((instance_id, task_id))
        if claim is None or claim.holder is None:
            raise NotFoundError(f"no claim on task {task_id!r} of {instance_id!r}")
        if claim.incarnation != self._incarnation(instance_id):
            raise NotFoundError(
                f"the claim on task {task_id!r} of {instance_id!r} was taken in another incarnation"
            )
        if claim.holder != worker_id:
            raise ClaimLostError(f"task {task_id!r} of {instance_id!r} is held by another worker")
        return claim

    async def release_task_claim(self, instance_id: str, task_id: str, worker_id: str) -> None:
        check_ids(instance_id, task_id, worker_id)
        with self._lock:
            self._held_by(instance_id, task_id, worker_id).holder = None

    async def extend_task_claim(
        self, instance_id: str, task_id: str, worker_id: str, additional_duration: timedelta
    ) -> TaskClaim:
        check_ids(instance_id, task_id, worker_id)
        check_duration(additional_duration, "additional_duration")
        with self._lock:
            claim = self._held_by(instance_id, task_id, worker_id)
            if claim.expires_at is not None:
                claim.expires_at = expiry(self._clock.now(), additional_duration)
                claim.ends = self._clock.monotonic() + additional_duration.total_seconds()
            return TaskClaim(instance_id, task_id, worker_id, claim.claimed_at, claim.expires_at, claim.token)

    async def find_available_tasks(self, worker_id: str, limit: int) -> list[AvailableTask]:
        validate_id(worker_id, "worker_id")
        check_limit(limit)
        if limit == 0:
            return []
        found: list[tuple[tuple[int, datetime, str, str], AvailableTask]] = []
        with self._lock:
            now = self._clock.monotonic()  # leases: the monotonic clock
            wall = self._clock.now()  # wake and timeout times: instants on the wall clock
            for instance_id, record in self._instances.items():
                if record.cancellation is not None or record.pause is not None:
                    continue
                ready = dict(record.ready_at)
                due = record.due_wait(wall)
                if due is not None:
                    ready[due[0]] = due[1]
                if not ready:
                    continue
                snapshot = record.snapshot()
                for task_id, ready_at in ready.items():
                    claim = self._claims.get((instance_id, task_id))
                    if claim is not None and claim.live(now, record.incarnation):
                        continue
                    task = AvailableTask(
                        instance_id,
                        task_id,
                        snapshot.task_input(),
                        snapshot.definition_hash,
                        snapshot.priority,
                    )
                    found.append(((snapshot.priority, ready_at, instance_id, task_id), task))
        found.sort(key=lambda item: item[0])
        return [task for _, task in found[:limit]]

    # -- cancellation ----------------------------------------------------------------------
    async def request_cancellation(self, instance_id: str, reason: str, requested_by: str) -> None:
        check_ids(instance_id)
        check_text(reason, "reason")
        check_text(requested_by, "requested_by")
        with self._lock:
            record = self._get(instance_id)
            state = record.snapshot().state
            if isinstance(state, Cancelled):
                return
            if isinstance(state, (Completed, Failed)):
                raise CannotCancelError(f"instance {instance_id!r} is {type(state).__name__}")
            record.cancellation = CancellationRequest(instance_id, reason, requested_by, self._clock.now())

    async def get_cancellation_request(self, instance_id: str) -> CancellationRequest | None:
        check_ids(instance_id)
        with self._lock:
            record = self._instances.get(instance_id)
            return record.cancellation if record else None

    async def clear_cancellation_request(self, instance_id: str) -> None:
        check_ids(instance_id)
        with self._lock:
            record = self._instances.get(instance_id)
            if record is not None:
                record.cancellation = None

    async def check_and_cancel(self, instance_id: str, interrupted_at_task: str | None = None) -> bool:
        check_ids(instance_id)
        check_optional_task_id(interrupted_at_task, "interrupted_at_task")
        with self._lock:
            record = self._get(instance_id)
            request, record.cancellation = record.cancellation, None
            snapshot = record.snapshot()
            if request is None or not isinstance(snapshot.state, InProgress):
                return False
            snapshot.state = Cancelled(
                request.reason,
                request.requested_by,
                self._clock.now(),
                snapshot.completed_tasks,
                interrupted_at_task,
            )
            doc = snapshot_to_json(snapshot)
            del doc["results"]
            record.doc = doc
            record.ready_at = {}
            record.pause = None
            record.version = self._next_version()
            return True

    # -- signals ---------------------------------------------------------------------------
    async def send_signal(self, instance_id: str, name: str, payload: bytes) -> Signal:
        check_ids(instance_id)
        validate_id(name, "name")
        data = check_payload(payload)
        with self._lock:
            record = self._get(instance_id)
            state = record.snapshot().state
            if not isinstance(state, InProgress):
                raise ConflictError(
                    f"instance {instance_id!r} is {type(state).__name__}; it takes no signals"
                )
            record.last_seq += 1
            signal = Signal(instance_id, name, data, record.last_seq, self._clock.now())
            record.signals.append(signal)
            return signal

    async def list_signals(self, instance_id: str, name: str | None = None) -> list[Signal]:
        check_ids(instance_id)
        if name is not None:
            validate_id(name, "name")
        with self._lock:
            return [s for s in self._get(instance_id).signals if name is None or s.name == name]

    async def deliver_signal(self, claim: TaskClaim) -> bytes | None:
        check_claim(claim)
        with self._lock:
            record = self._get(claim.instance_id)
            self._check_holding(claim, record.incarnation)
            recorded = record.results.get(claim.task_id)
            if recorded is not None:
                return recorded
            snapshot = record.snapshot()
            wait = snapshot.waiting_on()
            if snapshot.is_terminal:
                raise ConflictError(f"instance {claim.instance_id!r} is terminal; its state is final")
            if not isinstance(wait, AtSignal) or wait.step_id != claim.task_id:
                raise ConflictError(
                    f"instance {claim.instance_id!r} does not wait for a signal at step {claim.task_id!r}"
                )
            signal = record.pending(wait.signal_name)
            if signal is None:
                return None
            record.signals.remove(signal)
            record.results[claim.task_id] = signal.payload
            record.version = self._next_version()
            return signal.payload

    # -- pause -----------------------------------------------------------------------------
    async def pause_instance(self, instance_id: str, reason: str, requested_by: str) -> None:
        check_ids(instance_id)
        check_text(reason, "reason")
        check_text(requested_by, "requested_by")
        with self._lock:
            record = self._get(instance_id)
            state = record.snapshot().state
            if not isinstance(state, InProgress):
                raise CannotPauseError(f"instance {instance_id!r} is {type(state).__name__}")
            if record.pause is None:
                record.pause = PauseRequest(reason, requested_by, self._clock.now())

    async def resume_instance(self, instance_id: str) -> None:
        check_ids(instance_id)
        with self._lock:
            self._get(instance_id).pause = None

    async def get_pause_request(self, instance_id: str) -> PauseRequest | None:
        check_ids(instance_id)
        with self._lock:
            record = self._instances.get(instance_id)
            return record.pause if record else None
