"""Leases hold whatever the workers' wall clocks say (issue 12).

Each worker gets its own clock through the one seam, the ``clock=`` of the backend (and of the
runtime ``Worker``): an :class:`~objstore_wfp.clock.OffsetClock` off by -1 h ... +1 h, or one
stepped mid-lease as NTP would. Real time is this process's ``time.monotonic()``. On every store:

- nobody takes a claim over before its holder's own window has ended, by real time;
- once the holder is dead, a claimer takes over soon after the TTL by real time, and a claimer
  that first looks after the TTL (a short-lived serverless invocation) takes over at once;
- the holder itself stops being able to record when its window ends, however its wall clock moves.

Remote stores are exercised with claimers on "another machine" (another monotonic domain), so
what makes them take over in time is the store's own clock (``Last-Modified`` and ``Date``).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import timedelta
from typing import Any

import pytest

from objstore_wfp import AtTask, ObjectStoreBackend, OffsetClock, WorkflowSnapshot
from objstore_wfp.errors import ClaimLostError
from objstore_wfp.runtime import Client, Flow, Worker
from tests.backends import (
    StoreTarget,
    local_store_target,
    localstack_store_target,
    memory_store_target,
    moto_store_target,
)

__all__ = ["local_store_target", "localstack_store_target", "memory_store_target", "moto_store_target"]

pytestmark = pytest.mark.timeout(180)

HOUR = 3600.0
#: Wall-clock offsets of the workers, in seconds.
SKEWS = [-HOUR, -300.0, -30.0, 7.0, 30.0, 300.0, HOUR]
#: The holder's window as docs/semantics.md states it: it acts on a lease for at most this long
#: after sending the claim (1% drift allowed to each clock, and a margin).
DRIFT = 0.01


def holder_window(ttl: float) -> float:
    return ttl * (1 - 2 * DRIFT) - min(1.0, ttl / 10)


TARGETS = [
    pytest.param("local_store_target", id="local"),
    pytest.param("memory_store_target", id="memory"),
    pytest.param("moto_store_target", id="moto"),
    pytest.param("localstack_store_target", id="localstack"),
    pytest.param("azure_store_target", id="azurite"),
    pytest.param("gcs_store_target", id="fake-gcs"),
]


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest) -> StoreTarget:
    found: StoreTarget = request.getfixturevalue(request.param)
    return found


def remote(target: StoreTarget) -> bool:
    return target.name not in ("local", "memory")


def ttl_for(target: StoreTarget) -> float:
    # Remote stores give write times to the second: a lease there is judged up to 2 s late.
    return 3.0 if remote(target) else 1.0


def late_by(target: StoreTarget) -> float:
    """How long after the TTL a takeover may come: the store's second resolution (write time
    rounded up, response time truncated) plus polling and requests."""
    return 4.0 if remote(target) else 0.5


def clock_for(target: StoreTarget, skew: float, name: str) -> OffsetClock:
    """A worker's clock off by ``skew`` seconds; on a remote store, on a machine of its own."""
    domain = f"machine-{name}" if remote(target) else OffsetClock().domain
    return OffsetClock(timedelta(seconds=skew), domain=domain)


async def _snapshot(backend: ObjectStoreBackend, instance: str) -> None:
    snap = WorkflowSnapshot(instance, "skew")
    snap.update_position(AtTask("t"))
    await backend.save_snapshot(snap)


async def _contend(
    target: StoreTarget, instance: str, holder_skew: float, rival_skews: list[float], step: float = 0.0
) -> dict[str, Any]:
    """The holder claims (with ``holder_skew``) and dies; rivals (one per skew, each its own
    machine) poll the claim. ``step`` moves every clock by that much right after the claim.
    Returns real times: when the holder sent its claim, got it, and the first takeover."""
    ttl = ttl_for(target)
    holder_clock = clock_for(target, holder_skew, "holder")
    rival_clocks = [clock_for(target, s, f"rival-{n}") for n, s in enumerate(rival_skews)]
    async with target.backend(clock=holder_clock) as holder:
        await _snapshot(holder, instance)
        sent = time.monotonic()
        claim = await holder.claim_task(instance, "t", "holder", timedelta(seconds=ttl))
        got = time.monotonic()
        assert claim is not None
    for clock in [holder_clock, *rival_clocks]:
        clock.step(timedelta(seconds=step))
    taken: list[float] = []
    deadline = got + ttl + late_by(target) + 2.0

    async def rival(n: int, clock: OffsetClock) -> None:
        async with target.backend(clock=clock) as backend:
            while not taken and time.monotonic() < deadline:
                got = await backend.claim_task(instance, "t", f"rival-{n}", timedelta(seconds=ttl))
                if got is not None:
                    taken.append(time.monotonic())
                    assert got.token == claim.token + 1
                    return
                await asyncio.sleep(0.1 if remote(target) else 0.05)

    await asyncio.gather(*(rival(n, c) for n, c in enumerate(rival_clocks)))
    return {"sent": sent, "got": got, "taken": taken[0] if taken else None, "ttl": ttl}


def _check(target: StoreTarget, outcome: dict[str, Any], what: str) -> float:
    sent, got, taken, ttl = outcome["sent"], outcome["got"], outcome["taken"], outcome["ttl"]
    assert taken is not None, f"{what}: nobody took the dead holder's claim over"
    assert taken - sent >= holder_window(ttl), (
        f"{what}: taken over {taken - sent:.3f} s after the claim was sent, while the holder "
        f"may act on it for {holder_window(ttl):.3f} s"
    )
    # The claim was written by the time it came back: its lease ended a TTL after that at most.
    assert taken - got <= ttl + late_by(target), f"{what}: takeover {taken - got:.3f} s after the claim"
    return float(taken - sent)


async def test_skewed_holders_keep_their_leases(target: StoreTarget) -> None:
    """Holders whose wall clocks are off (one task each, all at once): rivals on true time,
    and as far off the other way, neither take a live claim nor wait past its TTL."""
    outcomes = await asyncio.gather(
        *(_contend(target, f"holder-{n}", skew, [0.0, -skew]) for n, skew in enumerate(SKEWS))
    )
    for skew, outcome in zip(SKEWS, outcomes, strict=True):
        _check(target, outcome, f"holder {skew:+g} s")


async def test_skewed_claimers_wait_for_the_lease(target: StoreTarget) -> None:
    """A holder on true time: rivals whose wall clocks are off by each skew neither take its
    live claim nor wait past its TTL."""
    _check(target, await _contend(target, "claimers", 0.0, SKEWS), "claimers at every skew")


@pytest.mark.parametrize("step", [-HOUR, HOUR], ids=["back-1h", "ahead-1h"])
async def test_clock_step_mid_lease(target: StoreTarget, step: float) -> None:
    """Every wall clock steps by an hour right after the claim: nothing changes."""
    outcome = await _contend(target, "stepped", 0.0, [0.0, 30.0], step=step)
    _check(target, outcome, f"clocks stepped {step:+g} s")


async def test_serverless_claimer_takes_over_at_once(target: StoreTarget) -> None:
    """A claimer that first looks after the TTL, in a fresh process of its own machine (a
    serverless invocation shorter than a TTL), takes the dead holder's claim on its first try."""
    ttl = ttl_for(target)
    async with target.backend(clock=clock_for(target, -HOUR, "holder")) as holder:
        await _snapshot(holder, "serverless")
        claim = await holder.claim_task("serverless", "t", "holder", timedelta(seconds=ttl))
        assert claim is not None
    await asyncio.sleep(ttl + late_by(target))
    async with target.backend(clock=clock_for(target, HOUR, "invocation")) as fresh:
        got = await fresh.claim_task("serverless", "t", "invocation", timedelta(seconds=ttl))
    assert got is not None and got.token == claim.token + 1, "a fresh claimer had to wait a TTL"


@pytest.mark.parametrize("step", [-HOUR, HOUR], ids=["back-1h", "ahead-1h"])
async def test_holder_stops_recording_when_its_window_ends(target: StoreTarget, step: float) -> None:
    """The holder's own clock steps mid-lease: it may record within its window, not after."""
    ttl = ttl_for(target)
    clock = clock_for(target, 0.0, "holder")
    async with target.backend(clock=clock) as holder:
        for instance in ("early", "late"):
            await _snapshot(holder, instance)
        early = await holder.claim_task("early", "t", "holder", timedelta(seconds=ttl))
        late = await holder.claim_task("late", "t", "holder", timedelta(seconds=ttl))
        got = time.monotonic()  # the late claim was sent before this
        assert early is not None and late is not None
        clock.step(timedelta(seconds=step))
        await holder.save_task_result("early", "t", b"in time", claim=early)
        await asyncio.sleep(max(0.0, got + holder_window(ttl) + 0.05 - time.monotonic()))
        with pytest.raises(ClaimLostError):
            await holder.save_task_result("late", "t", b"too late", claim=late)
        assert await holder.load_task_result("late", "t") is None


async def test_runtime_workers_with_skewed_clocks_never_run_a_task_twice_at_once(target: StoreTarget) -> None:
    """Runtime workers whose clocks are an hour behind, 30 s ahead and an hour ahead run tasks
    that outlive several leases (renewed by heartbeats): no task ever runs in two at once, and
    every task ends recorded."""
    ttl = ttl_for(target)
    hold = ttl * 2.5
    runs: list[tuple[int, float, float]] = []

    async def step(x: int) -> int:
        start = time.monotonic()
        try:
            await asyncio.sleep(hold)
        finally:
            runs.append((x, start, time.monotonic()))
        return x

    flow = Flow("skew").step(step)
    clocks = [clock_for(target, skew, f"worker-{n}") for n, skew in enumerate([-HOUR, 30.0, HOUR])]
    backends = [target.backend(clock=clock) for clock in clocks]
    workers = [
        Worker(b, [flow], lease=timedelta(seconds=ttl), clock=c, poll_interval=0.05, worker_id=f"w{n}")
        for n, (b, c) in enumerate(zip(backends, clocks, strict=True))
    ]
    try:
        client = Client(backends[0], [flow])
        ids = [await client.submit(flow, x) for x in range(3)]
        running = [asyncio.ensure_future(w.run_forever(handle_signals=False)) for w in workers]
        results = [await client.result(i, timeout=hold * 6 + 30, poll_interval=0.1) for i in ids]
        for w in workers:
            w.stop()
        await asyncio.gather(*running)
    finally:
        for b in backends:
            await b.close()
    assert results == [0, 1, 2]
    for x in range(3):
        mine = sorted((start, end) for y, start, end in runs if y == x)
        for (_, end), (start, _) in itertools.pairwise(mine):
            assert start >= end, f"task {x} ran in two workers at once: {mine}"


async def test_store_reports_version_age(target: StoreTarget) -> None:
    """Remote stores time versions by their own clock (``Last-Modified`` against ``Date``): never
    older than the truth, and at most about two seconds younger (both truncated to seconds)."""
    store = target.store()
    try:
        before = time.monotonic()
        await store.put("age/probe", b"x")
        await asyncio.sleep(2.2)
        found = await store.get("age/probe")
        elapsed = time.monotonic() - before
    finally:
        await store.close()
    assert found is not None
    if not remote(target):
        assert found.age is None, "a store on this machine has no clock of its own to report"
        return
    assert found.age is not None, f"{target.name} reported no write time or server time"
    assert found.age <= elapsed, f"{target.name}: age {found.age} s, but only {elapsed:.3f} s passed"
    assert found.age >= elapsed - 2.5, f"{target.name}: age {found.age} s after {elapsed:.3f} s"
