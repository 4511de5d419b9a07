"""Many OS processes race for the same tasks on real Redis and PostgreSQL servers: exactly one
winner per round, no two live holdings overlap, tokens go up by one per holder, stale writes
are refused. See :mod:`tests.examples.claim_race` for what each worker does."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import queue
from collections import Counter

import pytest

from objstore_wfp import WorkflowSnapshot
from tests.examples import claim_race
from tests.examples.claim_race import HOT_TASK, HOT_TOKENS, INSTANCE, ROUNDS, Report

WORKERS = 8
REPORT_TIMEOUT = 240.0


async def _prepare(kind: str, target: str, namespace: str) -> None:
    async with await claim_race.open_backend(kind, target, namespace) as backend:
        await backend.save_snapshot(WorkflowSnapshot(INSTANCE, "race-def"))


async def _recorded(kind: str, target: str, namespace: str) -> dict[str, bytes | None]:
    async with await claim_race.open_backend(kind, target, namespace) as backend:
        tasks = [f"round-{r}" for r in range(ROUNDS)] + [HOT_TASK]
        return {t: await backend.load_task_result(INSTANCE, t) for t in tasks}


def _race(kind: str, target: str, namespace: str) -> list[Report]:
    ctx = multiprocessing.get_context("spawn")
    barrier, done, reports_queue = ctx.Barrier(WORKERS), ctx.Event(), ctx.Queue()
    processes = [
        ctx.Process(
            target=claim_race.run_worker,
            args=(kind, target, namespace, f"worker-{n}", barrier, done, reports_queue),
        )
        for n in range(WORKERS)
    ]
    for process in processes:
        process.start()
    try:
        reports = []
        for _ in processes:
            try:
                reports.append(reports_queue.get(timeout=REPORT_TIMEOUT))
            except queue.Empty:
                pytest.fail(f"a worker did not report within {REPORT_TIMEOUT}s")
        return reports
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join(timeout=10)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_processes_racing_for_claims(kind: str, request: pytest.FixtureRequest) -> None:
    if kind == "redis":
        target, namespace = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    else:
        target, namespace = (
            request.getfixturevalue("postgres_dsn"),
            request.getfixturevalue("postgres_schema"),
        )
    asyncio.run(_prepare(kind, target, namespace))

    reports = _race(kind, target, namespace)

    errors = [f"{r.worker}:\n{r.error}" for r in reports if r.error]
    assert not errors, "workers failed:\n" + "\n".join(errors)
    # Phase 1: exactly one winner per round, and its result is the one recorded.
    winners = Counter(r for report in reports for r in report.won_rounds)
    assert all(winners[r] == 1 for r in range(ROUNDS)), f"rounds without exactly one winner: {winners}"
    recorded = asyncio.run(_recorded(kind, target, namespace))
    for report in reports:
        for r in report.won_rounds:
            assert recorded[f"round-{r}"] == report.worker.encode()
    # Phase 2: one grant per token, tokens 1..N without gaps, observed holdings in token order.
    holdings = sorted(h for report in reports for h in report.holdings)
    tokens = [token for token, _, _ in holdings]
    assert tokens == list(range(1, len(tokens) + 1)), f"fencing tokens not 1..N, each once: {tokens}"
    assert len(tokens) >= HOT_TOKENS, f"the hot task changed hands only {len(tokens)} times"
    for (token, _, end), (next_token, next_start, _) in itertools.pairwise(holdings):
        assert next_start >= end, (
            f"holding {next_token} began {end - next_start:.6f}s before holding {token} ended: "
            "two workers held the claim at once"
        )
    assert sum(r.stale_writes_accepted for r in reports) == 0, "a write with an expired claim was accepted"
    assert recorded[HOT_TASK] is None
