"""ObjectStoreBackend on S3 under injected faults, through each S3 adapter (s3fs/aiobotocore and
obstore): worker processes drive workflows to completion through a fault proxy in front of
moto_server (``tests/servers/faultproxy.py``) that breaks 20% of requests: 500, 503 SlowDown, 409
ConditionalRequestConflict, connections cut before or after the request was forwarded, 500 after
the request was applied, slow responses.

What must hold: claims stay mutually exclusive (holdings logged by every worker never overlap on
one task), no result is lost or recorded twice with different bytes, every operation either
succeeds or raises a typed ``BackendError``, and every workflow completes (workers retry what
failed with ``StoreUnavailableError``). Short TTLs and workers that sometimes stall past them make
takeovers happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import multiprocessing
import random
import time
import traceback
from collections import Counter
from collections.abc import Awaitable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from objstore_wfp import (
    AtTask,
    BackendError,
    ClaimLostError,
    Completed,
    ConflictError,
    NotFoundError,
    ObjectStoreBackend,
    StoreUnavailableError,
    WorkflowSnapshot,
)
from objstore_wfp.stores._retry import RetryPolicy
from tests.servers.s3 import FaultyS3

T = TypeVar("T")

PROCESSES = 3
WORKERS_PER_PROCESS = 4
INSTANCES = 8
TASKS = ("fetch", "charge", "ship")
TTL = timedelta(seconds=2)
#: How often a worker stalls past its TTL after claiming (a zombie that others take over from).
STALL_RATE = 0.1
FAULT_RATE = 0.2
RUN_SECONDS = 50.0
#: Per adapter, the URL scheme and per-request bounds for the workers' stores: faults resolve
#: fast, and a call that keeps failing ends as StoreUnavailableError, which the workers then retry
#: themselves.
ADAPTERS: dict[str, tuple[str, dict[str, Any]]] = {
    "s3fs": ("s3", {"retry_budget": 0.25, "attempt_timeout": 2.0}),
    "obstore": (
        "s3+obstore",
        {"retry": RetryPolicy(attempts=4, base_delay=0.05, max_delay=0.25, request_timeout=2.0)},
    ),
}


def _output(instance: str, task: str, worker: str, token: int) -> bytes:
    return f"{instance}|{task}|{worker}|{token}".encode()


class _Worker:
    """One asyncio worker: find -> claim -> save_task_result(claim) -> load / mark / CAS save ->
    release, logging every outcome."""

    def __init__(self, backend: ObjectStoreBackend, name: str, log: dict[str, Any], stop: Any) -> None:
        self.backend = backend
        self.name = name
        self.log = log
        self.stop = stop
        self.rng = random.Random(name)

    async def op(self, what: str, call: Awaitable[T]) -> T:
        """Run one backend operation and count how it ended."""
        try:
            result = await call
        except BackendError as exc:
            self.log["outcomes"][f"{what} {type(exc).__name__}"] += 1
            raise
        except Exception as exc:
            self.log["untyped"].append(f"{what}: {exc!r}")
            raise
        self.log["outcomes"][f"{what} ok"] += 1
        return result

    async def persist(self, what: str, make: Any) -> Any:
        """Retry an operation while the store is unavailable (bounded by the stop event)."""
        while not self.stop.is_set():
            try:
                return await self.op(what, make())
            except StoreUnavailableError:
                await asyncio.sleep(self.rng.uniform(0, 0.1))
        raise StoreUnavailableError("stopped")

    async def run(self) -> None:
        while not self.stop.is_set():
            try:
                found = await self.op("find_available_tasks", self.backend.find_available_tasks(self.name, 3))
            except StoreUnavailableError:
                found = []
            if not found:
                await asyncio.sleep(self.rng.uniform(0.05, 0.2))
            for task in found:
                # Unavailable: when stopping, or a claim that may have landed (its TTL frees it).
                with contextlib.suppress(StoreUnavailableError):
                    await self.work(task.instance_id, task.task_id)

    async def work(self, instance: str, task: str) -> None:
        claim = await self.op("claim_task", self.backend.claim_task(instance, task, self.name, TTL))
        if claim is None:
            self.log["outcomes"]["claim_task ok"] -= 1
            self.log["outcomes"]["claim_task ok (None: held)"] += 1
            return
        start = time.time()
        assert claim.expires_at is not None
        # Ends when the work stops or the TTL runs out, whichever is first.
        holding = [instance, task, start, claim.expires_at.timestamp(), claim.token, self.name]
        self.log["holdings"].append(holding)
        if self.rng.random() < STALL_RATE:
            await asyncio.sleep(TTL.total_seconds() * 1.2)
        output = _output(instance, task, self.name, claim.token)
        attempt = [instance, task, output.decode(), "pending"]
        self.log["results"].append(attempt)
        try:
            await self.persist(
                "save_task_result",
                lambda: self.backend.save_task_result(instance, task, output, claim=claim),
            )
            attempt[3] = "ok"
        except ClaimLostError:
            attempt[3] = "claim lost"
            holding[3] = min(time.time(), claim.expires_at.timestamp())
            return
        except ConflictError:
            attempt[3] = "conflict"  # a zombie's (or an earlier holder's) result was first
        finally:
            if attempt[3] == "pending":
                attempt[3] = "unknown"  # stopped while the store was unavailable
        await self.advance(instance, task)
        holding[3] = min(time.time(), claim.expires_at.timestamp())
        with contextlib.suppress(ClaimLostError, NotFoundError):  # overran the TTL, taken over
            await self.persist(
                "release_task_claim", lambda: self.backend.release_task_claim(instance, task, self.name)
            )

    async def advance(self, instance: str, task: str) -> None:
        """Move the workflow past ``task`` (compare-and-swap on the loaded version)."""
        while True:
            snap = await self.persist("load_snapshot", lambda: self.backend.load_snapshot(instance))
            if snap.is_terminal or snap.position != AtTask(task):
                return  # someone else advanced it already
            recorded = snap.completed_tasks[task].output
            snap.mark_task_completed(task, recorded)
            following = TASKS.index(task) + 1
            if following < len(TASKS):
                snap.update_position(AtTask(TASKS[following]))
            else:
                snap.mark_completed(recorded)
            try:
                await self.persist("save_snapshot", lambda s=snap: self.backend.save_snapshot(s))
                return
            except ConflictError:
                continue  # moved under us (or our own write landed before an error): look again


def _process_main(config: dict[str, Any], stop: Any, out: str) -> None:
    log: dict[str, Any] = {"outcomes": Counter(), "untyped": [], "holdings": [], "results": []}
    try:
        asyncio.run(_process(config, stop, log))
    except BaseException:
        log["untyped"].append(traceback.format_exc())
    Path(out).write_text(json.dumps(log))


async def _process(config: dict[str, Any], stop: Any, log: dict[str, Any]) -> None:
    async with ObjectStoreBackend.from_url(config["url"], **config["options"]) as backend:
        workers = [_Worker(backend, f"{config['name']}-w{n}", log, stop) for n in range(WORKERS_PER_PROCESS)]
        await asyncio.gather(*(w.run() for w in workers))


async def _all_completed(backend: ObjectStoreBackend) -> bool:
    for n in range(INSTANCES):
        if not isinstance((await backend.load_snapshot(f"order/{n}")).state, Completed):
            return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_workers_under_twenty_percent_faults(faulty_s3: FaultyS3, tmp_path: Path, adapter: str) -> None:
    scheme, store_options = ADAPTERS[adapter]
    url = f"{scheme}://{faulty_s3.bucket}/faults"
    direct = faulty_s3.endpoint.storage_options() | {"endpoint_url": faulty_s3.proxy.upstream}
    async with ObjectStoreBackend.from_url(f"s3://{faulty_s3.bucket}/faults", **direct) as clean:
        for n in range(INSTANCES):
            snap = WorkflowSnapshot(f"order/{n}", "flow", initial_input=b"go")
            snap.update_position(AtTask(TASKS[0]))
            await clean.save_snapshot(snap)

        faulty_s3.proxy.rate = FAULT_RATE
        context = multiprocessing.get_context("spawn")
        stop = context.Event()
        outs = [str(tmp_path / f"process-{n}.json") for n in range(PROCESSES)]
        options = faulty_s3.endpoint.storage_options() | store_options
        processes = [
            context.Process(
                target=_process_main, args=({"name": f"p{n}", "url": url, "options": options}, stop, out)
            )
            for n, out in enumerate(outs)
        ]
        for process in processes:
            process.start()
        started = time.monotonic()
        try:
            while time.monotonic() - started < RUN_SECONDS and not await _all_completed(clean):  # noqa: ASYNC110
                await asyncio.sleep(0.5)
        finally:
            stop.set()
            for process in processes:
                await asyncio.to_thread(process.join, 60)
                if process.is_alive():
                    process.kill()
                    await asyncio.to_thread(process.join, 10)
            faulty_s3.proxy.rate = 0.0
        completed = await _all_completed(clean)
        recorded = {
            (f"order/{n}", t): await clean.load_task_result(f"order/{n}", t)
            for n in range(INSTANCES)
            for t in TASKS
        }

    logs = [json.loads(Path(out).read_text()) for out in outs]  # noqa: ASYNC240
    untyped = [u for log in logs for u in log["untyped"]]
    assert not untyped, "\n".join(untyped)
    outcomes: Counter[str] = sum((Counter(log["outcomes"]) for log in logs), Counter())
    injected = faulty_s3.proxy.injected()
    print(f"\nrequests through the proxy: {len(faulty_s3.proxy.records)}; faults injected: {dict(injected)}")
    print(f"operations by outcome: {dict(sorted(outcomes.items()))}")
    assert completed, f"not every workflow completed within {RUN_SECONDS} s; outcomes: {outcomes}"

    # Mutual exclusion: on each task, holdings (claim returned .. work stopped or TTL ran out)
    # never overlap, and fencing tokens grow with time.
    holdings: dict[tuple[str, str], list[list[Any]]] = {}
    for log in logs:
        for instance, task, start, end, token, worker in log["holdings"]:
            holdings.setdefault((instance, task), []).append([start, end, token, worker])
    for key, spans in holdings.items():
        spans.sort()
        for before, after in itertools.pairwise(spans):
            assert before[1] <= after[0], f"{key}: overlapping {before}, {after}"
            assert before[2] < after[2], f"{key}: token did not grow: {before}, {after}"

    # Results: one per task, and it is the bytes of every call that reported success.
    attempts: dict[tuple[str, str], list[list[str]]] = {}
    for log in logs:
        for instance, task, output, outcome in log["results"]:
            attempts.setdefault((instance, task), []).append([output, outcome])
    for key, value in recorded.items():
        assert value is not None, f"{key}: result lost"
        tried = attempts.get(key, [])
        assert value.decode() in {o for o, _ in tried}, f"{key}: recorded {value!r} that nobody wrote"
        for output, outcome in tried:
            if outcome == "ok":
                assert output == value.decode(), f"{key}: {output} reported recorded, but {value!r} is"

    assert all(injected[f] > 0 for f in ("500", "503", "409", "drop_before", "drop_after", "slow"))
    assert max(token for spans in holdings.values() for _, _, token, _ in spans) > 1, "no takeover happened"
