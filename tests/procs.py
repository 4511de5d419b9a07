"""Child processes for the multi-process tests: how to start them, and what they run.

Children are real OS processes started from a ``forkserver`` (a clean interpreter that imported
this module once, then forks one child per request: spawn-like isolation at fork-like cost).
Each child opens its own backend with ``ObjectStoreBackend.from_url(url, **options)`` and
reports through files, never through shared memory, so a SIGKILLed child loses nothing the
parent needs.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from multiprocessing.context import BaseContext
from multiprocessing.synchronize import Barrier, Event
from typing import Any

from objstore_wfp import AtFork, AtTask, ObjectStoreBackend, OffsetClock, TaskClaim, WorkflowSnapshot
from objstore_wfp.clock import window
from objstore_wfp.errors import ClaimLostError, ConflictError, NotFoundError
from objstore_wfp.stores.base import ConditionalStore, ListedObject, StoredObject
from objstore_wfp.stores.urls import open_store

#: Upper bound for one child's whole run; a child still alive after it is killed and fails the test.
CHILD_TIMEOUT = 90.0
BARRIER_TIMEOUT = 60.0

_context: BaseContext | None = None


def context() -> BaseContext:
    """The multiprocessing context every test uses (one forkserver per test session)."""
    global _context
    if _context is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["__main__", "objstore_wfp", "objstore_wfp.stores.local", "tests.procs"])
        _context = ctx
    return _context


def run_all(
    target: Callable[..., None], arg_lists: Sequence[tuple[Any, ...]], timeout: float = CHILD_TIMEOUT
) -> list[int]:
    """Run one child per argument tuple, all at once; return their exit codes (killing
    stragglers after ``timeout`` seconds, which then report ``-SIGKILL``)."""
    ctx = context()
    procs = [ctx.Process(target=target, args=args, daemon=True) for args in arg_lists]  # type: ignore[attr-defined]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
    return [p.exitcode for p in procs]


def wall() -> float:
    """Seconds since the epoch on the machine's realtime clock: the clock ``SystemClock`` reads,
    so claim timestamps and these readings are comparable across processes."""
    return time.time()


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def write_json(path: str, value: Any) -> None:
    temp = f"{path}.tmp"
    with open(temp, "w") as f:
        json.dump(value, f)
    os.replace(temp, path)


# -- claim races -----------------------------------------------------------------------------------
# A plan is a list of rounds: ("release", ttl_seconds, 0) or ("expiry", ttl_seconds, window_seconds).
# Each racer's backend has a clock off by ``skew`` seconds, stepped by ``step`` seconds halfway
# through; its intervals are real time (``wall()``): from when a claim or renewal came back to
# the end of the holder's window counted from when it was asked for, or to its release.


def race_worker(
    index: int,
    url: str,
    options: dict[str, Any],
    tasks: list[tuple[str, str]],
    plan: list[tuple[str, float, float]],
    barrier: Barrier,
    out_path: str,
    skew: float = 0.0,
    step: float = 0.0,
) -> None:
    asyncio.run(_race(index, url, options, tasks, plan, barrier, out_path, skew, step))


async def _race(
    index: int,
    url: str,
    options: dict[str, Any],
    tasks: list[tuple[str, str]],
    plan: list[tuple[str, float, float]],
    barrier: Barrier,
    out_path: str,
    skew: float,
    step: float,
) -> None:
    rng = random.Random(index * 7919 + os.getpid())
    clock = OffsetClock(timedelta(seconds=skew))
    worker = f"racer-{index}"
    holds: list[dict[str, Any]] = []  # one interval per claim or renewal this process got
    releases: list[dict[str, Any]] = []
    events = {"claims": 0, "extends": 0, "extend_lost": 0}

    def record(rnd: int, claim: TaskClaim, asked: float, ttl: float, kind: str = "claim") -> None:
        holds.append(
            {
                "kind": kind,
                "round": rnd,
                "instance": claim.instance_id,
                "task": claim.task_id,
                "token": claim.token,
                "worker": worker,
                "start": wall(),
                "end": asked + window(ttl),
            }
        )

    async def release_all(rnd: int, held: dict[tuple[str, str], TaskClaim]) -> None:
        for (instance, task), claim in held.items():
            # The holder stops acting on the claim before it asks for the release: from here on
            # its interval is over, whatever the release then reports.
            stop = wall()
            for h in holds:
                if h["instance"] == instance and h["task"] == task and h["token"] == claim.token:
                    h["end"] = min(h["end"], stop)
            try:
                await backend.release_task_claim(instance, task, worker)
                outcome = "released"
            except ClaimLostError:
                outcome = "lost"
            except NotFoundError:
                outcome = "not_found"
            releases.append(
                {"round": rnd, "instance": instance, "task": task, "token": claim.token, "outcome": outcome}
            )

    # Until when (real time) this racer may act on each claim it holds.
    until: dict[tuple[str, str], float] = {}
    async with ObjectStoreBackend.from_url(url, **options, clock=clock) as backend:
        for rnd, (kind, ttl, period) in enumerate(plan):
            if rnd == len(plan) // 2:
                clock.step(timedelta(seconds=step))
            barrier.wait(BARRIER_TIMEOUT)
            held: dict[tuple[str, str], TaskClaim] = {}
            if kind == "release":
                for instance, task in rng.sample(tasks, len(tasks)):
                    asked = wall()
                    claim = await backend.claim_task(instance, task, worker, timedelta(seconds=ttl))
                    if claim is not None:
                        events["claims"] += 1
                        held[(instance, task)] = claim
                        record(rnd, claim, asked, ttl)
                # Nobody releases before everyone has tried: one winner per task and round.
                barrier.wait(BARRIER_TIMEOUT)
            else:
                deadline = time.monotonic() + period
                while time.monotonic() < deadline:
                    for instance, task in rng.sample(tasks, len(tasks)):
                        mine = held.get((instance, task))
                        if mine is not None and wall() < until[(instance, task)]:
                            if rng.random() < 0.15:
                                asked = wall()
                                try:
                                    renewed = await backend.extend_task_claim(
                                        instance, task, worker, timedelta(seconds=ttl)
                                    )
                                except ClaimLostError:
                                    events["extend_lost"] += 1
                                    continue
                                events["extends"] += 1
                                assert renewed.token == mine.token
                                held[(instance, task)] = renewed
                                until[(instance, task)] = asked + window(ttl)
                                record(rnd, renewed, asked, ttl, "renewal")
                            continue
                        asked = wall()
                        claim = await backend.claim_task(instance, task, worker, timedelta(seconds=ttl))
                        if claim is not None:
                            events["claims"] += 1
                            held[(instance, task)] = claim
                            until[(instance, task)] = asked + window(ttl)
                            record(rnd, claim, asked, ttl)
                    await asyncio.sleep(rng.uniform(0, 0.004))
                barrier.wait(BARRIER_TIMEOUT)
            await release_all(rnd, held)
    write_json(out_path, {"holds": holds, "releases": releases, "events": events})


# -- concurrent results ----------------------------------------------------------------------------
def result_worker(
    index: int,
    url: str,
    options: dict[str, Any],
    instance: str,
    own_tasks: list[str],
    shared_task: str,
    shared_output: str,
    barrier: Barrier,
    out_path: str,
) -> None:
    asyncio.run(
        _results(index, url, options, instance, own_tasks, shared_task, shared_output, barrier, out_path)
    )


async def _results(
    index: int,
    url: str,
    options: dict[str, Any],
    instance: str,
    own_tasks: list[str],
    shared_task: str,
    shared_output: str,
    barrier: Barrier,
    out_path: str,
) -> None:
    worker = f"writer-{index}"
    outcomes: dict[str, str] = {}
    async with ObjectStoreBackend.from_url(url, **options) as backend:
        await backend.verify_store()
        claims: dict[str, TaskClaim | None] = {}
        for n, task in enumerate(own_tasks):
            # Half of the results are written under a claim: the claim check must not lose any.
            claims[task] = (
                await backend.claim_task(instance, task, worker, timedelta(minutes=5)) if n % 2 else None
            )
        stale = await backend.load_snapshot(instance)  # no result is written before the barrier
        barrier.wait(BARRIER_TIMEOUT)

        async def own(task: str) -> None:
            await backend.save_task_result(instance, task, f"{worker}:{task}".encode(), claim=claims[task])
            outcomes[task] = "ok"

        async def shared() -> None:
            try:
                await backend.save_task_result(instance, shared_task, shared_output.encode())
                outcomes[shared_task] = "ok"
            except ConflictError:
                outcomes[shared_task] = "conflict"

        async def overwrite() -> None:
            # A create-or-overwrite save of a copy taken before any result: it must keep every
            # result recorded meanwhile (a save never forgets a recorded result).
            for _ in range(3):
                stale.version = None
                await backend.save_snapshot(stale)
                await asyncio.sleep(0.002)

        await asyncio.gather(shared(), overwrite(), *(own(t) for t in own_tasks))
    write_json(out_path, outcomes)


# -- workers driving workflows ---------------------------------------------------------------------
#: A workflow's steps: a task id, or a tuple of task ids run as parallel fork branches.
Steps = list[Any]


def _step_tasks(step: Any) -> list[str]:
    return list(step) if isinstance(step, (list, tuple)) else [step]


def _position(steps: Steps, index: int) -> AtTask | AtFork:
    step = steps[index]
    if isinstance(step, (list, tuple)):
        return AtFork(f"fork{index}", list(step), [])
    return AtTask(step)


def drive_worker(
    index: int, url: str, options: dict[str, Any], flows: dict[str, Steps], out_path: str
) -> None:
    asyncio.run(_drive(index, url, options, flows, out_path))


async def _drive(
    index: int, url: str, options: dict[str, Any], flows: dict[str, Steps], out_path: str
) -> None:
    """A worker loop: find, claim, run (record the result under the claim), advance the workflow
    by compare-and-swap, release. Stops after a run of empty polls."""
    worker = f"driver-{index}"
    rng = random.Random(index)
    ran: list[list[str]] = []
    stats = {"claimed": 0, "lost_claims": 0, "conflicts": 0, "advanced": 0}
    async with ObjectStoreBackend.from_url(url, **options) as backend:
        idle = 0
        deadline = time.monotonic() + CHILD_TIMEOUT - 10
        while idle < 40 and time.monotonic() < deadline:
            offered = await backend.find_available_tasks(worker, 3)
            if not offered:
                idle += 1
                await asyncio.sleep(0.01)
                continue
            idle = 0
            for task in rng.sample(offered, len(offered)):
                claim = await backend.claim_task(
                    task.instance_id, task.task_id, worker, timedelta(seconds=20)
                )
                if claim is None:
                    stats["lost_claims"] += 1
                    continue
                stats["claimed"] += 1
                ran.append([task.instance_id, task.task_id])
                output = task.task_id.encode() + b"<" + (task.input or b"")[:40]
                try:
                    await backend.save_task_result(task.instance_id, task.task_id, output, claim=claim)
                except ConflictError:
                    stats["conflicts"] += 1
                await _advance(backend, flows[task.instance_id], task.instance_id, stats)
                await backend.release_task_claim(task.instance_id, task.task_id, worker)
    write_json(out_path, {"ran": ran, "stats": stats})


async def _advance(backend: ObjectStoreBackend, steps: Steps, instance: str, stats: dict[str, int]) -> None:
    """Move the workflow past every step whose tasks are all recorded (retrying on conflicts)."""
    while True:
        snap = await backend.load_snapshot(instance)
        if snap.is_terminal:
            return
        pos = snap.position
        at = next(
            i
            for i in range(len(steps))
            if _position(steps, i) == pos or (isinstance(pos, AtFork) and pos.fork_id == f"fork{i}")
        )
        tasks = _step_tasks(steps[at])
        if not all(t in snap.completed_tasks for t in tasks):
            return
        # The last task of a step hands its output on (a fork: its last branch's).
        snap.mark_task_completed(tasks[-1], snap.completed_tasks[tasks[-1]].output)
        if at + 1 == len(steps):
            snap.mark_completed(b"done:" + snap.completed_tasks[tasks[-1]].output)
        else:
            snap.update_position(_position(steps, at + 1))
        try:
            await backend.save_snapshot(snap)
            stats["advanced"] += 1
        except ConflictError:
            stats["conflicts"] += 1


# -- zombies ---------------------------------------------------------------------------------------
def zombie_worker(
    url: str,
    options: dict[str, Any],
    instance: str,
    tasks: list[str],
    ttl: float,
    claimed: Event,
    out_path: str,
) -> None:
    asyncio.run(_zombie(url, options, instance, tasks, ttl, claimed, out_path))


async def _zombie(
    url: str,
    options: dict[str, Any],
    instance: str,
    tasks: list[str],
    ttl: float,
    claimed: Event,
    out_path: str,
) -> None:
    """Claims each task with a short TTL, then keeps writing around (and long after) expiry,
    never renewing, as a worker stuck in a GC pause or a lost network would."""
    rng = random.Random(os.getpid())
    log: list[dict[str, Any]] = []
    async with ObjectStoreBackend.from_url(url, **options) as backend:
        await backend.verify_store()
        for task, event in zip(tasks, claimed, strict=True):
            claim = await backend.claim_task(instance, task, "zombie", timedelta(seconds=ttl))
            assert claim is not None, f"the zombie must win its own first claim of {task}"
            event.set()
            await asyncio.sleep(rng.uniform(0.5, 1.6) * ttl)
            entry: dict[str, Any] = {
                "task": task,
                "token": claim.token,
                "expires": claim.expires_at.timestamp(),
            }  # type: ignore[union-attr]
            entry["result_call"] = wall()
            try:
                await backend.save_task_result(instance, task, b"zombie output", claim=claim)
                entry["result"] = "ok"
            except (ClaimLostError, ConflictError) as exc:
                entry["result"] = type(exc).__name__
            # Wake up again once the task has surely changed hands, and try to carry on.
            deadline = time.monotonic() + 30
            while not any(
                c.task_id == task and c.worker_id == "usurper" for c in await backend.list_claims(instance)
            ):
                assert time.monotonic() < deadline, f"nobody took {task} over"
                await asyncio.sleep(0.005)
            try:
                await backend.extend_task_claim(instance, task, "zombie", timedelta(seconds=60))
                entry["extend"] = "ok"
            except (ClaimLostError, NotFoundError) as exc:
                entry["extend"] = type(exc).__name__
            try:
                await backend.release_task_claim(instance, task, "zombie")
                entry["release"] = "ok"
            except (ClaimLostError, NotFoundError) as exc:
                entry["release"] = type(exc).__name__
            log.append(entry)
    write_json(out_path, log)


def usurper_worker(
    url: str, options: dict[str, Any], instance: str, tasks: list[str], claimed: list[Event], out_path: str
) -> None:
    asyncio.run(_usurper(url, options, instance, tasks, claimed, out_path))


async def _usurper(
    url: str, options: dict[str, Any], instance: str, tasks: list[str], claimed: list[Event], out_path: str
) -> None:
    """Takes over each task the moment the zombie's claim expires, then records its own result."""
    log: list[dict[str, Any]] = []
    async with ObjectStoreBackend.from_url(url, **options) as backend:
        await backend.verify_store()
        for task, event in zip(tasks, claimed, strict=True):
            assert event.wait(BARRIER_TIMEOUT), f"the zombie never claimed {task}"
            deadline = time.monotonic() + 30
            while True:
                claim = await backend.claim_task(instance, task, "usurper", timedelta(seconds=60))
                if claim is not None:
                    break
                assert time.monotonic() < deadline, f"never took over {task}"
                await asyncio.sleep(0.002)
            entry: dict[str, Any] = {
                "task": task,
                "token": claim.token,
                "claimed": claim.claimed_at.timestamp(),
            }
            try:
                await backend.save_task_result(instance, task, b"usurper output", claim=claim)
                entry["result"] = "ok"
            except ConflictError:
                entry["result"] = "ConflictError"
            log.append(entry)
    write_json(out_path, log)


# -- crashes ---------------------------------------------------------------------------------------
#: Large enough that the crash workload's inputs and outputs go to blob objects.
CRASH_INLINE_LIMIT = 64
_BIG = b"B" * 200


class Killer:
    """Counts the interleaving points a workload passes and SIGKILLs the process at one of them."""

    def __init__(self, kill_at: int | None) -> None:
        self.kill_at = kill_at
        self.points = 0
        self.armed = False

    def point(self) -> bool:
        """Count one point; ``True`` if the process must die here (callers may do a last partial
        act first, such as writing half a buffer)."""
        if not self.armed:
            return False
        self.points += 1
        return self.points == self.kill_at

    @staticmethod
    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)


class DyingStore(ConditionalStore):
    """Forwards to ``inner``; dies before (``when="before"``) or after (``"after"``) the N-th call."""

    def __init__(self, inner: ConditionalStore, killer: Killer, when: str) -> None:
        self.inner = inner
        self.killer = killer
        self.when = when
        self.supports_conditional_delete = inner.supports_conditional_delete

    @property
    def url(self) -> str:
        return self.inner.url

    async def _call(self, coro: Any) -> Any:
        if self.killer.point() and self.when == "before":
            coro.close()
            self.killer.die()
        n = self.killer.points
        result = await coro
        if self.when == "after" and self.killer.armed and n == self.killer.kill_at:
            self.killer.die()
        return result

    async def get(self, key: str) -> StoredObject | None:
        return await self._call(self.inner.get(key))  # type: ignore[no-any-return]

    async def put(self, key: str, data: bytes) -> str:
        return await self._call(self.inner.put(key, data))  # type: ignore[no-any-return]

    async def put_if_absent(self, key: str, data: bytes) -> str | None:
        return await self._call(self.inner.put_if_absent(key, data))  # type: ignore[no-any-return]

    async def put_if_version(self, key: str, data: bytes, version: str) -> str | None:
        return await self._call(self.inner.put_if_version(key, data, version))  # type: ignore[no-any-return]

    async def delete(self, key: str) -> None:
        await self._call(self.inner.delete(key))

    async def delete_if_version(self, key: str, version: str) -> bool:
        return await self._call(self.inner.delete_if_version(key, version))  # type: ignore[no-any-return]

    async def list(self, prefix: str, *, start_after: str | None = None) -> AsyncIterator[ListedObject]:
        if self.killer.point() and self.when == "before":
            self.killer.die()
        n = self.killer.points
        async for item in self.inner.list(prefix, start_after=start_after):
            yield item
        if self.when == "after" and self.killer.armed and n == self.killer.kill_at:
            self.killer.die()

    async def close(self) -> None:
        await self.inner.close()


def _patch_os(killer: Killer, *, count: bool) -> None:
    """Make ``os.fsync`` a no-op and, if ``count``, count every file-system mutation (in any
    thread) as a point; at the chosen one, die (``os.write`` first writes half its buffer,
    leaving a torn temporary file).

    A SIGKILL loses nothing the kernel already has, so syncing to the device changes nothing a
    process crash can leave behind; it only makes each of the many kill runs slow. The calls
    still count as points: the order of the other mutations around them is what matters."""

    def wrap(name: str) -> None:
        original = getattr(os, name)

        def patched(*args: Any, **kwargs: Any) -> Any:
            if count and killer.point():
                if name == "write":
                    fd, data = args
                    original(fd, bytes(data)[: max(1, len(data) // 2)])
                killer.die()
            if name == "fsync":
                return None
            return original(*args, **kwargs)

        setattr(os, name, patched)

    for name in ("write", "fsync", "link", "replace", "rename", "unlink", "mkdir"):
        wrap(name)


async def crash_setup(backend: ObjectStoreBackend) -> None:
    """State that exists before the crashing workload starts (written without crash points)."""
    cancel = WorkflowSnapshot("crash/cancel me", "flow", initial_input=b"c-in")
    cancel.update_position(AtTask("c1"))
    await backend.save_snapshot(cancel)
    doomed = WorkflowSnapshot("crash/doomed", "flow", initial_input=_BIG)
    doomed.update_position(AtFork("fork", ["d1", "d2", "d3"], []))
    await backend.save_snapshot(doomed)
    await backend.claim_task("crash/doomed", "d1", "setup", timedelta(hours=1))
    await backend.save_task_result("crash/doomed", "d2", _BIG + b"d2")
    claimed = WorkflowSnapshot("crash/claimed", "flow", initial_input=b"k-in")
    claimed.priority = 1
    claimed.update_position(AtTask("k1"))
    await backend.save_snapshot(claimed)
    await backend.claim_task("crash/claimed", "k1", "setup", timedelta(hours=1))
    chain = WorkflowSnapshot("crash/chain", "flow", initial_input=b"ch-in")
    chain.update_position(AtTask("s1"))
    await backend.save_snapshot(chain)


def _to(task: str) -> Callable[[WorkflowSnapshot], bool]:
    def advance(snapshot: WorkflowSnapshot) -> bool:
        snapshot.update_position(AtTask(task))
        return True

    return advance


async def crash_workload(backend: ObjectStoreBackend) -> None:
    """Every kind of write the backend does, in one sequence a crash may cut anywhere."""
    hour = timedelta(hours=1)
    new = WorkflowSnapshot("crash/new", "flow", initial_input=_BIG)
    new.update_position(AtTask("a"))
    await backend.save_snapshot(new)
    claim = await backend.claim_task("crash/new", "a", "w", hour)
    assert claim is not None
    await backend.save_task_result("crash/new", "a", _BIG + b"a", claim=claim)
    await backend.release_task_claim("crash/new", "a", "w")
    new = await backend.load_snapshot("crash/new")
    new.update_position(AtFork("f", ["b1", "b2", "b3"], []))
    await backend.save_snapshot(new)
    await backend.save_task_result("crash/new", "b1", b"b1 out")
    await backend.claim_task("crash/new", "b2", "w", hour)
    await backend.extend_task_claim("crash/new", "b2", "w", 2 * hour)
    await backend.request_cancellation("crash/cancel me", "stop", "w")
    await backend.check_and_cancel("crash/cancel me", "c1")
    await backend.delete_snapshot("crash/doomed")
    await backend.extend_task_claim("crash/claimed", "k1", "setup", hour)
    await backend.release_task_claim("crash/claimed", "k1", "setup")
    claimed = await backend.load_snapshot("crash/claimed")
    claimed.priority = 2
    claimed.update_position(AtTask("k2"))
    await backend.save_snapshot(claimed)
    await backend.save_task_result("crash/new", "b3", _BIG + b"b3")
    new = await backend.load_snapshot("crash/new")
    new.update_position(AtTask("z"))
    await backend.save_snapshot(new)
    new = await backend.load_snapshot("crash/new")
    new.mark_completed(_BIG + b"final")
    await backend.save_snapshot(new)
    # A runtime worker's chain: record and advance in one write, reserving the next step, which
    # it then claims directly; it never releases (finished tasks' claims lapse).
    created = WorkflowSnapshot("crash/created", "flow", initial_input=b"cr-in")
    created.update_position(AtTask("c"))
    await backend.create_snapshot(created)
    step = await backend.claim_task("crash/chain", "s1", "w", hour)
    assert step is not None
    _, reserved = await backend.record_and_advance(step, _BIG + b"s1", _to("s2"), reserve=hour)
    assert reserved == ["s2"]
    step = await backend.claim_task("crash/chain", "s2", "w", hour)
    assert step is not None
    await backend.record_and_advance(step, b"s2 out", _to("s3"))
    await backend.repair(grace=timedelta(0))


def crash_worker(
    url: str, options: dict[str, Any], level: str, when: str, kill_at: int | None, out_path: str
) -> None:
    """Run the workload on a root prepared by :func:`crash_setup` and die at point ``kill_at``
    (``None``: count the points, written to ``out_path``). ``level`` is ``"store"`` (store
    calls) or ``"os"`` (file-system mutations of a local store)."""
    killer = Killer(kill_at)
    _patch_os(killer, count=level == "os")

    async def main() -> None:
        # The parent probes the store once; a probe per child would only slow the kills down.
        store = open_store(url, **options)
        if level == "store":
            store = DyingStore(store, killer, when)
        backend = ObjectStoreBackend(store, inline_limit=CRASH_INLINE_LIMIT, verify_conditional_writes=False)
        killer.armed = True
        await crash_workload(backend)
        killer.armed = False
        await backend.close()

    asyncio.run(main())
    if kill_at is None:
        write_json(out_path, {"points": killer.points})
    else:
        # The kill point lies beyond the workload: report it, so the parent can stop.
        write_json(out_path, {"points": killer.points, "survived": True})
    sys.stdout.flush()


__all__ = [
    "CRASH_INLINE_LIMIT",
    "DyingStore",
    "Killer",
    "context",
    "crash_setup",
    "crash_worker",
    "drive_worker",
    "race_worker",
    "read_json",
    "result_worker",
    "run_all",
    "usurper_worker",
    "wall",
    "write_json",
    "zombie_worker",
]
