"""``Worker``: finds, claims, runs, records and advances tasks of the flows it is given.

One task goes through: claim with a lease (TTL) -> run the function (in a thread, or awaited if
it is ``async def``) while a heartbeat renews the lease well inside the TTL -> record the output
fenced by the claim -> advance the workflow by compare-and-swap -> release the claim.

- Execution is at least once: a task runs again if its worker dies or loses its lease mid-run.
- Recording is exactly once: the first recorded output wins; a worker whose output lost adopts
  the recorded one, and a worker whose lease was lost abandons its run without recording.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from objstore_wfp.clock import Clock, SystemClock, window
from objstore_wfp.contract import PersistentBackend
from objstore_wfp.errors import BackendError, ClaimLostError, ConflictError, NotFoundError
from objstore_wfp.ids import validate_id
from objstore_wfp.model import AvailableTask, Completed, Failed, TaskClaim, WorkflowSnapshot
from objstore_wfp.runtime.cas import update_snapshot
from objstore_wfp.runtime.client import Client
from objstore_wfp.runtime.codec import Codec, JsonCodec
from objstore_wfp.runtime.errors import FlowDefinitionError
from objstore_wfp.runtime.events import EventHandler, EventKind, WorkerEvent, WorkerStats
from objstore_wfp.runtime.flow import (
    RESERVED_PREFIX,
    Child,
    Delay,
    Flow,
    Place,
    Registry,
    Step,
    WaitForSignal,
    child_instance_id,
)
from objstore_wfp.runtime.progress import advance, step_id
from objstore_wfp.runtime.retry import RetryPolicy

log = logging.getLogger(__name__)

#: Largest batch a worker asks ``find_available_tasks`` for when skipping tasks of unknown flows.
MAX_FIND_LIMIT = 256
#: An idle worker's poll interval grows to at most this multiple of ``poll_interval`` by default
#: (four doublings), see ``Worker(max_poll_interval=...)``.
MAX_POLL_FACTOR = 16


_ClaimLister = Callable[[], Awaitable[list[TaskClaim]]]


def _claim_lister(backend: PersistentBackend) -> _ClaimLister:
    list_claims: _ClaimLister | None = getattr(backend, "list_claims", None)
    if list_claims is None:
        raise TypeError(
            f"wait_for_leases needs a backend with list_claims(); {type(backend).__name__} has none"
        )
    return list_claims


def default_worker_id() -> str:
    """``<host>-<pid>-<random>``: unique per worker, readable in claim listings."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class _Lease:
    claim: TaskClaim
    #: Until when (the worker clock's ``monotonic()``) this worker may act on the lease: the
    #: holder's window from the send of the claim or of the last renewal that succeeded.
    deadline: float
    lost: str | None = None
    cancelled: bool = False


@dataclass(frozen=True)
class _Failure:
    error: str


class _PollBackoff:
    """The wait before the next poll: ``base`` seconds after a poll that found work or a finished
    task, doubling with every poll that found nothing, up to ``cap``. An idle fleet then lists
    the store once per ``cap`` per worker instead of once per ``base``.

    >>> backoff = _PollBackoff(1.0, 5.0)
    >>> [backoff.after_poll(found=False) for _ in range(5)]
    [1.0, 2.0, 4.0, 5.0, 5.0]
    >>> backoff.after_poll(found=True), backoff.after_poll(found=False)
    (1.0, 2.0)
    """

    def __init__(self, base: float, cap: float) -> None:
        self.base, self.cap = base, cap
        self.current = base

    def after_poll(self, *, found: bool) -> float:
        if found:
            self.current = self.base
        delay = self.current
        self.current = min(self.cap, self.current * 2)
        return delay

    def reset(self) -> None:
        self.current = self.base


class Worker:
    """Runs tasks of ``flows`` stored in ``backend``.

    - ``concurrency``: tasks run at once by this worker.
    - ``lease``: the claim's TTL; ``heartbeat`` (default a third of it) is how often it is renewed.
      If the worker dies, another takes the task over once the lease has expired.
    - ``poll_interval``: seconds between polls while there is no work. Each poll that finds
      nothing doubles the wait, up to ``max_poll_interval`` seconds (default 16 times
      ``poll_interval``); it is back at ``poll_interval`` as soon as a poll finds work or a task
      finishes. Work that appears in an idle store (a delay or a signal wait that comes due
      too) waits up to ``max_poll_interval`` to be picked up. Set both equal to poll at a fixed
      rate.
    - ``retry``: attempts and backoff for a failing task; then the workflow is marked ``Failed``.
    - ``sweep_interval``: how often ``run_forever`` repairs workflows whose result was recorded by
      a worker that died before advancing them (see :meth:`sweep`).
    - ``shutdown_grace``: seconds in-flight tasks get to finish after :meth:`stop` (default: the
      lease); then they are abandoned and their claims released.
    - ``on_event``: called with every :class:`WorkerEvent` (from the worker's event loop).

    Serverless handler (a complete one: ``examples/aws_lambda/``)::

        BACKEND = SyncBackend.from_url(URL)  # once per process, at import
        WORKER = Worker(BACKEND.backend, [flow])

        def handler(event, context):
            return BACKEND.run(WORKER.run_once())
    """

    def __init__(
        self,
        backend: PersistentBackend,
        flows: Iterable[Flow] | Registry,
        *,
        worker_id: str | None = None,
        concurrency: int = 4,
        lease: timedelta = timedelta(seconds=30),
        heartbeat: timedelta | None = None,
        poll_interval: float = 1.0,
        max_poll_interval: float | None = None,
        retry: RetryPolicy | None = None,
        codec: Codec | None = None,
        sweep_interval: float = 600.0,
        shutdown_grace: float | None = None,
        clock: Clock | None = None,
        on_event: EventHandler | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if lease <= timedelta(0):
            raise ValueError(f"lease must be positive, got {lease}")
        heartbeat = heartbeat if heartbeat is not None else lease / 3
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval}")
        if max_poll_interval is None:
            max_poll_interval = poll_interval * MAX_POLL_FACTOR
        if max_poll_interval < poll_interval:
            raise ValueError(
                f"max_poll_interval ({max_poll_interval}) must be at least poll_interval ({poll_interval})"
            )
        if not timedelta(0) < heartbeat < lease:
            raise ValueError(f"heartbeat ({heartbeat}) must be positive and shorter than the lease ({lease})")
        self.backend = backend
        self.registry = flows if isinstance(flows, Registry) else Registry(flows)
        if not len(self.registry):
            raise FlowDefinitionError("a worker needs at least one flow")
        self.worker_id = validate_id(worker_id or default_worker_id(), "worker_id")
        self.concurrency = concurrency
        self.lease = lease
        self.heartbeat = heartbeat
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self._backoff = _PollBackoff(poll_interval, max_poll_interval)
        self.retry = retry or RetryPolicy()
        self.codec: Codec = codec or JsonCodec()
        self.sweep_interval = sweep_interval
        self.shutdown_grace = shutdown_grace if shutdown_grace is not None else lease.total_seconds()
        self.clock: Clock = clock or SystemClock()
        self.on_event = on_event
        self.stats = WorkerStats()
        self._executor: ThreadPoolExecutor | None = None
        self._stop: asyncio.Event | None = None
        self._inflight: set[asyncio.Task[int]] = set()
        # Tasks this worker is claiming or running: a poll that races a claim's index update
        # may offer them again, and claiming one's own task only costs a refused write.
        self._busy: set[tuple[str, str]] = set()
        # When each claim this worker got was asked for (``clock.monotonic()``), until it runs:
        # its lease is timed from there, not from any wall clock.
        self._asked: dict[tuple[str, str, int], float] = {}

    # -- public entry points -------------------------------------------------------------------
    async def run_once(self) -> int:
        """Poll once, run what this worker can claim (at most ``concurrency`` tasks) to the end,
        and return how many tasks it completed. For serverless handlers and cron jobs."""
        with self._thread_pool():
            found = await self._find(self.concurrency)
            done = await asyncio.gather(*(self._process(task, claim) for task, claim in found))
        return sum(done)

    async def run_until_idle(self, *, wait_for_leases: bool = False) -> int:
        """Work until nothing is left to do (no task available, none in flight, nothing to
        repair); return the number of tasks completed.

        A task whose lease another worker holds (one that died mid-task, say) is not available
        until that lease expires. By default this returns without waiting for it. With
        ``wait_for_leases=True`` it then waits while another holder has a live lease on a task
        of an in-progress workflow of a known flow, waking when the earliest of those leases
        expires (after ``poll_interval`` seconds at least), and works again on whatever was
        freed, so a batch job finishes the workflows a dead worker left behind. Claims without a
        TTL never expire and are not waited for. It needs a backend with ``list_claims()``
        (:class:`~objstore_wfp.ObjectStoreBackend` has it) and raises ``TypeError`` otherwise.
        """
        list_claims = _claim_lister(self.backend) if wait_for_leases else None
        completed = await self._run(until_idle=True, handle_signals=False)
        while list_claims is not None:
            expiry = await self._earliest_foreign_lease(list_claims)
            if expiry is None:
                break
            wait = (expiry - self.clock.now()).total_seconds()
            # Not sooner: every wake-up that finds nothing pays for a sweep (a load per instance).
            await asyncio.sleep(max(wait, self.poll_interval))
            completed += await self._run(until_idle=True, handle_signals=False)
        return completed

    async def _earliest_foreign_lease(self, list_claims: _ClaimLister) -> datetime | None:
        """When the first live lease held by another worker, on a task of an in-progress
        workflow of a known flow, expires; ``None`` if there is no such lease."""
        now = self.clock.now()
        try:
            claims = await list_claims()
        except BackendError as exc:
            log.warning("worker %s: listing claims failed, not waiting for leases: %s", self.worker_id, exc)
            return None
        earliest: datetime | None = None
        for claim in claims:
            expires_at = claim.expires_at
            if (
                claim.worker_id == self.worker_id
                or expires_at is None
                or claim.is_expired(now)
                or claim.task_id.startswith(RESERVED_PREFIX)
                or (earliest is not None and expires_at >= earliest)
            ):
                continue
            try:
                snapshot = await self.backend.load_snapshot(claim.instance_id)
            except BackendError:
                continue  # deleted meanwhile, or unreadable: nothing to wait for
            if not snapshot.is_terminal and self.registry.get(snapshot.definition_hash) is not None:
                earliest = expires_at
        return earliest

    async def run_forever(self, *, handle_signals: bool = True) -> int:
        """Work until :meth:`stop` (by default also on SIGTERM or SIGINT); return the number of
        tasks completed. A second signal abandons in-flight tasks at once."""
        return await self._run(until_idle=False, handle_signals=handle_signals)

    @property
    def poll_delay(self) -> float:
        """Seconds the worker will wait after its next poll if that poll finds nothing."""
        return self._backoff.current

    def stop(self) -> None:
        """Stop claiming new tasks and let in-flight ones finish (``shutdown_grace``); a second
        call abandons them at once and releases their claims. Call it from the event loop."""
        if self._stop is None:
            return
        if self._stop.is_set():
            for task in self._inflight:
                task.cancel()
        self._stop.set()

    async def sweep(self) -> int:
        """Advance every in-progress workflow of a known flow whose recorded results are ahead of
        its position (a worker died between recording and advancing); return how many moved.
        Costs one load per stored instance, so it runs rarely."""
        moved = 0
        try:
            instance_ids = await self.backend.list_snapshots()
        except BackendError as exc:
            log.warning("worker %s: sweep could not list instances: %s", self.worker_id, exc)
            return 0
        for instance_id in instance_ids:
            try:
                snapshot = await self.backend.load_snapshot(instance_id)
                flow = self.registry.get(snapshot.definition_hash)
                if flow is None or snapshot.is_terminal:
                    continue
                if not self._advance(flow, snapshot):
                    await self._recheck_child(flow, snapshot)
                    continue
                await self.backend.save_snapshot(snapshot)
                if snapshot.is_terminal:
                    await self._finished(snapshot)
            except ConflictError:
                continue  # someone else moved it meanwhile
            except BackendError as exc:
                # Deleted meanwhile, unreadable, or the store failing: the next sweep tries again.
                log.warning("worker %s: sweep skipped %r: %s", self.worker_id, instance_id, exc)
                continue
            moved += 1
            self._emit("advanced", instance_id, detail=str(snapshot.position or "finished"))
        return moved

    # -- the loop ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _thread_pool(self) -> Any:
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"wfp-{self.worker_id}")
        try:
            yield
        finally:
            # A function abandoned after its lease was lost may still be running: do not wait.
            self._executor.shutdown(wait=False)
            self._executor = None

    async def _run(self, *, until_idle: bool, handle_signals: bool) -> int:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        installed: list[signal.Signals] = []
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, self.stop)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError, ValueError):
                    pass  # not the main thread, or a platform without signal handlers
        completed = 0
        last_sweep = time.monotonic()
        stop_waiter = asyncio.ensure_future(self._stop.wait())
        try:
            with self._thread_pool():
                while not self._stop.is_set():
                    free = self.concurrency - len(self._inflight)
                    found = await self._find(free) if free else []
                    for task, claim in found:
                        self._inflight.add(asyncio.ensure_future(self._process(task, claim)))
                    if not self._inflight and not found:
                        if until_idle:
                            if await self.sweep() == 0:
                                break
                            continue
                        if time.monotonic() - last_sweep >= self.sweep_interval:
                            last_sweep = time.monotonic()
                            await self.sweep()
                    # Wake on a finished task (its successor may now be ready), the stop signal,
                    # or, when slots are free and the last poll came up short, after the backoff.
                    timeout = self._backoff.after_poll(found=bool(found)) if len(found) < free else None
                    done, _ = await asyncio.wait(
                        {*self._inflight, stop_waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                    )
                    if done - {stop_waiter}:
                        self._backoff.reset()
                    completed += self._harvest(done)
                if self._inflight:
                    done, _ = await asyncio.wait(self._inflight, timeout=self.shutdown_grace)
                    completed += self._harvest(done)
                    for running in self._inflight:
                        running.cancel()
                    done, _ = await asyncio.wait(self._inflight) if self._inflight else (set(), set())
                    completed += self._harvest(done)
        finally:
            stop_waiter.cancel()
            for sig in installed:
                loop.remove_signal_handler(sig)
            self._stop = None
        return completed

    def _harvest(self, done: AbstractSet[asyncio.Future[Any]]) -> int:
        completed = 0
        for task in done:
            if task not in self._inflight:
                continue
            self._inflight.discard(task)
            if task.cancelled():
                continue
            exc = task.exception()
            if exc is not None:
                log.error("worker %s: task processing crashed", self.worker_id, exc_info=exc)
            else:
                completed += task.result()
        return completed

    async def _find(self, wanted: int) -> list[tuple[AvailableTask, TaskClaim]]:
        """Find and claim up to ``wanted`` tasks of known flows that this worker is not already
        running. Asks for more when tasks of flows it does not know fill the answer."""
        claimed: list[tuple[AvailableTask, TaskClaim]] = []
        limit = wanted
        while True:
            skipped = 0

            def accept(instance_id: str, task_id: str, definition_hash: str) -> bool:
                nonlocal skipped
                flow = self.registry.get(definition_hash)
                if flow is None or flow.place(task_id) is None:
                    skipped += 1
                    return False
                return (instance_id, task_id) not in self._busy and all(
                    (t.instance_id, t.task_id) != (instance_id, task_id) for t, _ in claimed
                )

            asked = self.clock.monotonic()
            try:
                found = await self.backend.claim_available(
                    self.worker_id, limit - len(claimed), self.lease, accept
                )
            except BackendError as exc:
                log.warning("worker %s: polling for tasks failed: %s", self.worker_id, exc)
                return claimed
            self._asked.update(((c.instance_id, c.task_id, c.token), asked) for _, c in found)
            claimed.extend(found)
            if len(claimed) >= wanted or not skipped or limit >= MAX_FIND_LIMIT:
                return claimed
            limit = min(MAX_FIND_LIMIT, limit * 4)

    # -- one task ------------------------------------------------------------------------------
    async def _process(self, task: AvailableTask, claim: TaskClaim) -> int:
        """Run a claimed task, then keep going down its chain; return how many tasks ended
        recorded."""
        flow = self.registry.get(task.workflow_definition_hash)
        if flow is None or flow.place(task.task_id) is None:
            self._asked.pop((claim.instance_id, claim.task_id, claim.token), None)
            await self._release(task.instance_id, task.task_id)
            return 0
        return await self._chain(flow, task.instance_id, task.task_id, task.input, claim)

    async def _chain(
        self, flow: Flow, instance_id: str, task_id: str, data: bytes | None, claim: TaskClaim | None = None
    ) -> int:
        """Run a task (claiming it first unless ``claim`` is given), then the tasks its
        completion made ready and reserved for this worker (a chain's next step, a fork's
        branches: claimed directly, no poll), as far as they go; return how many tasks ended
        recorded."""
        current = (instance_id, task_id)
        self._busy.add(current)
        try:
            claim = claim or await self._claim(*current)
            if claim is None:
                return 0
            done, after = await self._execute(flow, claim, data)
            if after is None or self._stop_requested():
                return done
            snapshot, following = after
            data = snapshot.task_input()
            branches = await asyncio.gather(*(self._chain(flow, instance_id, t, data) for t in following))
            return done + sum(branches)
        finally:
            self._busy.discard(current)

    def _stop_requested(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    async def _claim(self, instance_id: str, task_id: str) -> TaskClaim | None:
        asked = self.clock.monotonic()
        try:
            claim = await self.backend.claim_task(instance_id, task_id, self.worker_id, self.lease)
            if claim is not None:
                self._asked[(instance_id, task_id, claim.token)] = asked
            return claim
        except BackendError as exc:
            log.warning("worker %s: claiming %s/%s failed: %s", self.worker_id, instance_id, task_id, exc)
            # Hold the slot for a poll interval so a failing store is not hammered in a loop.
            await asyncio.sleep(self.poll_interval)
            return None

    async def _execute(
        self, flow: Flow, claim: TaskClaim, data: bytes | None
    ) -> tuple[int, tuple[WorkflowSnapshot, list[str]] | None]:
        """Run one claimed task, record its output and advance the workflow in one write.
        Returns (1 if the task ended recorded, else 0) and, when the write made tasks ready
        that this worker may run next, the saved snapshot and those tasks' ids."""
        iid, tid = claim.instance_id, claim.task_id
        asked = self._asked.pop((iid, tid, claim.token), None)
        place = flow.place(tid)
        if place is None or asked is None:
            await self._release(iid, tid)
            return 0, None
        lease = _Lease(claim, asked + window(self.lease.total_seconds()))
        holding = True
        try:
            if claim.takeover and await self.backend.load_task_result(iid, tid) is not None:
                # The task changed hands since this worker's find offered it: the previous
                # holder may have recorded it and released. Only then can it be done already, so
                # other claims skip this read (a backend that gives no hint at worst runs a
                # recorded task again: its output then loses to the recorded one). Advancing is
                # idempotent and cheap here.
                await update_snapshot(self.backend, iid, lambda s: self._advance(flow, s))
                self._emit("released", iid, tid, token=claim.token, detail="already recorded")
                return 0, None
            self.stats.claimed += 1
            if claim.takeover:
                self.stats.takeovers += 1
            self._emit("claimed", iid, tid, token=claim.token)
            if isinstance(place.unit, Step):
                outcome: bytes | _Failure | None = await self._run_leased(lease, place.unit, data)
                kind = ""
            else:
                outcome, kind = await self._perform(lease, place, data)
            if outcome is None:
                self._emit("released", iid, tid, token=claim.token, detail="not due")
                return 0, None
            if lease.lost is not None:
                holding = False
                self.stats.lost += 1
                self._emit("lost", iid, tid, token=claim.token, detail=lease.lost)
                return 0, None
            if lease.cancelled:
                self._emit("cancelled", iid, tid, token=claim.token)
                return 0, None
            if isinstance(outcome, _Failure):
                try:
                    await self._finished(await self._fail(lease.claim, outcome.error))
                except ClaimLostError as exc:
                    holding = False
                    self.stats.lost += 1
                    self._emit("lost", iid, tid, token=claim.token, detail=str(exc))
                return 0, None
            try:
                snapshot, following = await self.backend.record_and_advance(
                    lease.claim,
                    outcome,
                    lambda s: self._advance(flow, s),
                    reserve=self.lease,
                    take=1 + max(0, self.concurrency - len(self._busy)),
                )
            except ClaimLostError as exc:
                holding = False
                self.stats.lost += 1
                self._emit("lost", iid, tid, token=claim.token, detail=str(exc))
                return 0, None
            except ConflictError:
                # Nothing recorded for this task and the workflow is final (cancelled or failed).
                self._emit("cancelled", iid, tid, token=claim.token, detail="workflow is final")
                return 0, None
            # The task is done: its claim lapses instead of costing a release write.
            holding = False
            recorded = snapshot.completed_tasks.get(tid)
            if recorded is not None and recorded.output != outcome:
                self.stats.duplicates += 1
                self._emit("duplicate", iid, tid, token=claim.token)
            else:
                self.stats.recorded += 1
                self._emit("recorded", iid, tid, token=claim.token, detail=kind)
            if snapshot.is_terminal:
                await self._finished(snapshot)
            return 1, ((snapshot, following) if following else None)
        except asyncio.CancelledError:
            self._emit("released", iid, tid, token=claim.token, detail="worker shutting down")
            raise
        except BackendError as exc:
            log.warning("worker %s: task %s/%s: %s", self.worker_id, iid, tid, exc)
            return 0, None
        finally:
            if holding:
                await self._release(iid, tid)

    async def _run_leased(self, lease: _Lease, step: Step, data: bytes | None) -> bytes | _Failure:
        """Run every attempt of ``step`` while a heartbeat keeps the lease alive. If the lease is
        lost or the workflow is cancelled, the run is stopped (an ``async`` function is
        cancelled; a thread cannot be, so its eventual result is dropped)."""
        work = asyncio.ensure_future(self._attempts(lease.claim, step, data))
        beat = asyncio.ensure_future(self._heartbeat(lease, work))
        try:
            return await work
        except asyncio.CancelledError:
            if lease.lost is None and not lease.cancelled:
                raise  # the worker itself is being cancelled (shutdown)
            return _Failure("abandoned")
        finally:
            beat.cancel()
            work.cancel()

    async def _heartbeat(self, lease: _Lease, work: asyncio.Future[Any]) -> None:
        """Renew every ``heartbeat``; abandon the run when the lease is lost, or may have lapsed
        for others: no renewal succeeded within the window of the last one (a renewal still
        unanswered then is given up)."""
        claim = lease.claim
        interval = self.heartbeat.total_seconds()
        while True:
            await asyncio.sleep(max(0.0, min(interval, lease.deadline - self.clock.monotonic())))
            asked = self.clock.monotonic()
            try:
                renewal = self.backend.extend_task_claim(
                    claim.instance_id, claim.task_id, self.worker_id, self.lease
                )
                renewed = await asyncio.wait_for(renewal, max(0.0, lease.deadline - asked))
                if renewed.token != claim.token:
                    # This worker holds the task again under a newer claim (the instance was
                    # replaced, or the lease lapsed and it claimed anew): not this run's lease.
                    raise ClaimLostError(f"now held with token {renewed.token}, not {claim.token}")
                lease.claim = renewed
                lease.deadline = asked + window(self.lease.total_seconds())
            except (ClaimLostError, NotFoundError) as exc:
                lease.lost = f"lease lost: {exc}"
                work.cancel()
                return
            except (BackendError, asyncio.TimeoutError) as exc:
                if self.clock.monotonic() >= lease.deadline:
                    lease.lost = f"lease may have lapsed while renewing failed: {exc!r}"
                    work.cancel()
                    return
                log.warning("worker %s: renewing lease failed, will retry: %s", self.worker_id, exc)
                continue
            try:
                if await self.backend.check_and_cancel(claim.instance_id, claim.task_id):
                    lease.cancelled = True
                    work.cancel()
                    return
            except BackendError as exc:
                log.warning("worker %s: checking cancellation failed: %s", self.worker_id, exc)

    async def _attempts(self, claim: TaskClaim, step: Step, data: bytes | None) -> bytes | _Failure:
        iid, tid = claim.instance_id, claim.task_id
        attempt = 0
        while True:
            attempt += 1
            self.stats.executions += 1
            self._emit("started", iid, tid, token=claim.token, attempt=attempt)
            try:
                value = self.codec.decode(data) if data is not None else None
                return self.codec.encode(await self._call(step, value))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                if attempt >= self.retry.max_attempts:
                    return _Failure(f"task {tid!r} failed after {attempt} attempt(s): {error}")
                self.stats.retries += 1
                self._emit("retrying", iid, tid, token=claim.token, attempt=attempt, detail=error)
                await asyncio.sleep(self.retry.backoff(attempt))

    async def _call(self, step: Step, value: Any) -> Any:
        if inspect.iscoroutinefunction(step.fn):
            return await step.fn(value)
        assert self._executor is not None
        result = await asyncio.get_running_loop().run_in_executor(self._executor, step.fn, value)
        return await result if inspect.isawaitable(result) else result

    async def _perform(
        self, lease: _Lease, place: Place, data: bytes | None
    ) -> tuple[bytes | _Failure | None, str]:
        """The output of a task that is not a plain step, and what it was (for its event): a
        delay passes its input on, a child flow's start submits the child, a signal wait takes
        the signal (or its timeout path). ``None``: nothing to record now (a wait offered
        without a signal or a timeout)."""
        unit = place.unit
        if isinstance(unit, Delay):
            return (data if data is not None else self.codec.encode(None)), "delay"
        if isinstance(unit, Child) and not place.child_done:
            child_id = child_instance_id(lease.claim.instance_id, place.unit_id)
            value = self.codec.decode(data) if data is not None else None
            # An earlier holder of this task may have submitted it already: keep that one.
            await Client(self.backend, codec=self.codec).submit(
                unit.flow, value, instance_id=child_id, if_exists="return_existing"
            )
            return self.codec.encode(child_id), "child started"
        # Records the signal's payload as this task's result, fenced by the claim, and returns
        # it; a retry after a crash gets the recorded one back.
        payload = await self.backend.deliver_signal(lease.claim)
        if payload is not None:
            return payload, "signal"
        if not isinstance(unit, WaitForSignal) or unit.timeout is None:
            return None, ""
        if unit.on_timeout is None:
            return _Failure(f"no signal {unit.signal!r} came within {unit.timeout} (and no on_timeout)"), ""
        return await self._run_leased(lease, Step(place.unit_id, unit.on_timeout), data), "timeout"

    async def _finished(self, snapshot: WorkflowSnapshot) -> None:
        """Tell the parent of a finished child flow: the child's output as the signal its parent
        waits for, or the parent fails with the child. A parent that is gone or final is left
        alone."""
        parent = self.registry.parent_of(snapshot.instance_id, snapshot.definition_hash)
        if parent is None:
            return
        parent_id, wait = parent
        state = snapshot.state
        try:
            if isinstance(state, Completed):
                await self.backend.send_signal(parent_id, wait, state.final_output)
                return
            ended = f"failed: {state.error}" if isinstance(state, Failed) else "was cancelled"
            error = f"child flow {snapshot.instance_id!r} {ended}"

            def fail(parent_snapshot: WorkflowSnapshot) -> bool:
                if step_id(parent_snapshot.position) != wait or wait in parent_snapshot.completed_tasks:
                    return False
                parent_snapshot.mark_failed(error)
                return True

            await update_snapshot(self.backend, parent_id, fail)
        except (NotFoundError, ConflictError) as exc:
            log.info(
                "worker %s: parent %r of %r not told: %s",
                self.worker_id,
                parent_id,
                snapshot.instance_id,
                exc,
            )

    async def _recheck_child(self, flow: Flow, snapshot: WorkflowSnapshot) -> None:
        """For a sweep: a parent that waits for a child which finished without telling it (its
        worker died in between, or it was cancelled directly) is told now. A child that is
        telling it at this very moment may make the signal arrive twice; the parent takes one,
        the other stays pending."""
        wait = step_id(snapshot.position)
        place = None if wait is None else flow.place(wait)
        if wait is None or place is None or not place.child_done:
            return
        child = await self.backend.load_snapshot(child_instance_id(snapshot.instance_id, place.unit_id))
        if (
            child.is_terminal
            and not await self.backend.list_signals(snapshot.instance_id, wait)
            and await self.backend.load_task_result(snapshot.instance_id, wait) is None
        ):
            await self._finished(child)

    async def _fail(self, claim: TaskClaim, error: str) -> WorkflowSnapshot:
        """Mark the workflow failed, fenced by ``claim``: a run whose task passed to another
        holder (or whose instance was replaced) fails nothing (``ClaimLostError``)."""
        task_id = claim.task_id

        def mark(snapshot: WorkflowSnapshot) -> bool:
            # Another execution of the task may have succeeded meanwhile: then nothing failed.
            if task_id in snapshot.completed_tasks:
                return False
            snapshot.mark_failed(error)
            return True

        snapshot, _ = await self.backend.record_and_advance(claim, None, mark)
        self.stats.failed += 1
        self._emit("failed", claim.instance_id, task_id, detail=error)
        return snapshot

    def _advance(self, flow: Flow, snapshot: WorkflowSnapshot) -> bool:
        try:
            return advance(flow, snapshot, self.codec, self.clock.now())
        except FlowDefinitionError as exc:
            log.error("worker %s: instance %r: %s", self.worker_id, snapshot.instance_id, exc)
            return False

    async def _release(self, instance_id: str, task_id: str) -> None:
        try:
            await self.backend.release_task_claim(instance_id, task_id, self.worker_id)
        except (NotFoundError, ClaimLostError):
            pass  # nothing of ours left to give back
        except BackendError as exc:
            log.warning(
                "worker %s: release of %s/%s failed (lease will expire): %s",
                self.worker_id,
                instance_id,
                task_id,
                exc,
            )

    def _emit(
        self,
        kind: EventKind,
        instance_id: str,
        task_id: str | None = None,
        *,
        token: int | None = None,
        attempt: int | None = None,
        detail: str = "",
    ) -> None:
        if self.on_event is None:
            return
        event = WorkerEvent(kind, self.worker_id, instance_id, task_id, token, attempt, detail)
        try:
            self.on_event(event)
        except Exception:
            log.exception("worker %s: event handler failed", self.worker_id)
