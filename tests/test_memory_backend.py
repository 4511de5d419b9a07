"""InMemoryBackend against the conformance suite, plus its thread-safety."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections import Counter
from datetime import timedelta

import pytest

from objstore_wfp import InMemoryBackend, ManualClock, WorkflowSnapshot
from objstore_wfp.testing import BackendConformance


class TestInMemoryBackend(BackendConformance):
    @pytest.fixture
    def backend(self, clock: ManualClock) -> InMemoryBackend:
        return InMemoryBackend(clock=clock)


def _run_threads(pool: list[threading.Thread]) -> None:
    # Switch threads as often as the interpreter allows, so an unguarded check-then-set in the
    # backend gets interleaved instead of almost never.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(timeout=60)
    finally:
        sys.setswitchinterval(interval)
    assert not any(t.is_alive() for t in pool), "a worker thread hung"


def test_threads_hammering_one_task_never_share_a_token() -> None:
    """Claims with ttl=0 expire at once, so every claim_task call takes the task over: across
    threads the fencing tokens must be exactly 1..N with none handed out twice. Without the
    backend's lock this fails on every run (measured), unlike a race for a single win."""
    backend = InMemoryBackend(clock=ManualClock())
    threads, per_thread = 8, 3000
    barrier = threading.Barrier(threads, timeout=30)
    tokens: list[list[int]] = [[] for _ in range(threads)]

    async def worker(n: int) -> None:
        for _ in range(per_thread):
            claim = await backend.claim_task("shared", "hot", f"worker-{n}", timedelta(0))
            assert claim is not None, "a zero-TTL claim must never block the next claimer"
            tokens[n].append(claim.token)

    def run(n: int) -> None:
        barrier.wait()
        asyncio.run(worker(n))

    _run_threads([threading.Thread(target=run, args=(n,)) for n in range(threads)])
    handed_out = sorted(t for per in tokens for t in per)
    assert handed_out == list(range(1, threads * per_thread + 1)), (
        f"{threads * per_thread - len(set(handed_out))} fencing tokens were handed out twice or skipped"
    )
    for per in tokens:
        assert per == sorted(per), "one thread saw its tokens go backwards"


def test_threads_with_own_event_loops_have_one_winner_per_round() -> None:
    """InMemoryBackend guards its state with a thread lock, so workers running their own event
    loops in OS threads (as a threaded test harness or a sync wrapper would) still get exactly
    one claim per task and lose no result."""
    backend = InMemoryBackend(clock=ManualClock())
    threads, rounds = 8, 150
    asyncio.run(backend.save_snapshot(WorkflowSnapshot("shared", "def-1")))
    barrier = threading.Barrier(threads, timeout=30)
    wins: list[list[int]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    async def worker(n: int) -> None:
        for r in range(rounds):
            await asyncio.to_thread(barrier.wait)
            claim = await backend.claim_task("shared", f"task-{r}", f"worker-{n}", None)
            if claim is not None:
                wins[n].append(r)
                await backend.save_task_result("shared", f"task-{r}", f"{n}".encode(), claim=claim)

    def run(n: int) -> None:
        try:
            asyncio.run(worker(n))
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()  # the other threads stop waiting for this one

    _run_threads([threading.Thread(target=run, args=(n,)) for n in range(threads)])
    per_round = Counter(r for won in wins for r in won)
    bad = {r: per_round[r] for r in range(rounds) if per_round[r] != 1}
    assert not bad, f"rounds without exactly one winner (round: winners): {bad}"
    assert not errors, f"workers failed: {errors!r}"
    snapshot = asyncio.run(backend.load_snapshot("shared"))
    assert len(snapshot.completed_tasks) == rounds
    for n, won in enumerate(wins):
        for r in won:
            assert snapshot.completed_tasks[f"task-{r}"].output == f"{n}".encode()
