"""The multi-process claim race, run by spawned worker processes against a real server.

Phase 1 (rounds): all workers meet at a barrier, then claim the same fresh task at once; the
one that wins records its name as the task's result with its claim.

Phase 2 (one hot task, short TTL): workers claim the same task over and over until its fencing
token reaches ``HOT_TOKENS``. A holder with an even token releases the task; one with an odd
token lets the claim expire and then tries to record a result with it, which must be refused.
Each worker logs, per holding, the token and the interval in which it *observed* itself as the
holder: from the moment ``claim_task`` returned to the earlier of its expiry and the moment it
called ``release_task_claim``. A correct backend makes these intervals disjoint and ordered by
token, since each lies inside the true holding and holdings follow one another.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import traceback
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from postgres_backend import PostgresBackend
from redis_backend import RedisBackend

from objstore_wfp import ClaimLostError, ConflictError, NotFoundError, PersistentBackend

INSTANCE = "race"
HOT_TASK = "hot"
ROUNDS = 25
ROUND_TTL = timedelta(seconds=60)
HOT_TTL = timedelta(milliseconds=40)
HOT_TOKENS = 40
#: Safety bound for phase 2; it normally ends after a second or two.
HOT_DEADLINE_SECONDS = 90.0
BARRIER_TIMEOUT = 120.0


@dataclass
class Report:
    worker: str
    won_rounds: list[int] = field(default_factory=list)
    #: (token, observed start, observed end), in seconds since the epoch.
    holdings: list[tuple[int, float, float]] = field(default_factory=list)
    stale_writes_accepted: int = 0
    error: str | None = None


async def open_backend(kind: str, target: str, namespace: str) -> PersistentBackend:
    """A backend on the real server, with the system clock (workers share the machine's)."""
    if kind == "redis":
        return RedisBackend.from_url(target, prefix=namespace)
    return await PostgresBackend.connect(target, schema=namespace, max_size=2)


async def _work(report: Report, kind: str, target: str, namespace: str, barrier: Any, done: Any) -> None:
    rng = random.Random(report.worker)
    async with await open_backend(kind, target, namespace) as backend:
        for r in range(ROUNDS):
            barrier.wait(BARRIER_TIMEOUT)
            claim = await backend.claim_task(INSTANCE, f"round-{r}", report.worker, ROUND_TTL)
            if claim is not None:
                report.won_rounds.append(r)
                # With two winners, a write may be refused; the test then reports the round.
                with contextlib.suppress(ClaimLostError, ConflictError):
                    await backend.save_task_result(
                        INSTANCE, f"round-{r}", report.worker.encode(), claim=claim
                    )

        barrier.wait(BARRIER_TIMEOUT)
        deadline = time.monotonic() + HOT_DEADLINE_SECONDS
        while not done.is_set() and time.monotonic() < deadline:
            claim = await backend.claim_task(INSTANCE, HOT_TASK, report.worker, HOT_TTL)
            if claim is None:
                await asyncio.sleep(rng.uniform(0, 0.003))
                continue
            start = time.time()
            assert claim.expires_at is not None
            expires = claim.expires_at.timestamp()
            if claim.token >= HOT_TOKENS:
                done.set()
            if claim.token % 2 == 0:
                await asyncio.sleep(rng.uniform(0, 0.01))
                release_called = time.time()
                try:
                    await backend.release_task_claim(INSTANCE, HOT_TASK, report.worker)
                    end = min(release_called, expires)
                except (ClaimLostError, NotFoundError):  # expired, taken over (and maybe released)
                    end = expires
            else:
                await asyncio.sleep(HOT_TTL.total_seconds() + rng.uniform(0.001, 0.01))
                try:
                    await backend.save_task_result(INSTANCE, HOT_TASK, report.worker.encode(), claim=claim)
                    report.stale_writes_accepted += 1
                except ClaimLostError:
                    pass
                end = expires
            report.holdings.append((claim.token, start, end))


def run_worker(
    kind: str, target: str, namespace: str, worker: str, barrier: Any, done: Any, queue: Any
) -> None:
    """Process entry point: run both phases and put a :class:`Report` on ``queue``."""
    report = Report(worker)
    try:
        asyncio.run(_work(report, kind, target, namespace, barrier, done))
    except BaseException:
        report.error = traceback.format_exc()
        barrier.abort()  # release the others rather than leave them waiting
    queue.put(report)
