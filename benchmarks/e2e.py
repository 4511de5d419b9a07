"""Figures 4 and 5: the runtime end to end, in worker processes, and a worker's memory.

Instances of a two-step flow (trivial ``async`` functions) are bulk-written as the client would
have submitted them; then 1, 2 or 4 worker processes start, wait at a barrier, and run
``Worker.run_forever`` until every task is recorded. Tasks per second = tasks / (last worker
done - barrier released); store requests are counted in every worker by
:class:`~objstore_wfp.stores.counting.CountingStore` (after its start-up store probe), and the
client's ``submit`` is counted separately on a sample and added per instance to the cost.

Memory: one worker process runs 10,000 tasks (instances of a 20-step flow) and reports its peak
RSS (``VmHWM``; see :func:`_status_kb` for why not ``ru_maxrss``); the baseline is the same process
running 100.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import resource
import shutil
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks import bulk
from benchmarks.common import Report, Row, dollars, median, running, spread
from benchmarks.moto import Moto, count_http
from objstore_wfp.backends.objectstore import ObjectStoreBackend
from objstore_wfp.runtime import Client, Flow, Worker
from objstore_wfp.stores.counting import CountingStore
from objstore_wfp.stores.urls import open_store

#: Steps of the flow the throughput figure runs (tasks per instance).
STEPS = 2
#: Steps of the flow the memory figure runs: a long flow keeps the backlog of ready tasks short,
#: so the figure is about the worker, not about listing a deep queue.
MEMORY_STEPS = 20


async def increment(x: int) -> int:
    return x + 1


def bench_flow(steps: int = STEPS) -> Flow:
    """``steps`` sequential trivial ``async`` steps, ``s0``, ``s1``, ..."""
    flow = Flow(f"bench-{steps}")
    for k in range(steps):
        flow = flow.step(increment, name=f"s{k}")
    return flow


# -- the worker process ------------------------------------------------------------------------------
@dataclass
class _Job:
    url: str
    options: dict[str, Any]
    tasks: int
    concurrency: int
    steps: int = STEPS


def _worker_process(job: _Job, done: Any, finished: Any, ready: Any, go: Any, results: Any) -> None:
    results.put(asyncio.run(_work(job, done, finished, ready, go)))


async def _work(job: _Job, done: Any, finished: Any, ready: Any, go: Any) -> dict[str, Any]:
    counting = CountingStore(open_store(job.url, **job.options))
    backend = ObjectStoreBackend(counting)
    await backend.verify_store()  # what open_backend does once per process: not part of the figure
    counting.reset()
    http = await count_http(counting.inner) if job.url.startswith("s3://") else None

    def count(event: Any) -> None:
        if event.kind == "recorded":
            with done.get_lock():
                done.value += 1
                if done.value >= job.tasks:
                    finished.set()

    worker = Worker(
        backend,
        [bench_flow(job.steps)],
        concurrency=job.concurrency,
        lease=timedelta(minutes=5),
        on_event=count,
    )

    async def stop_when_finished() -> None:
        await asyncio.to_thread(finished.wait)
        worker.stop()

    ready.release()
    await asyncio.to_thread(go.wait)
    stopper = asyncio.ensure_future(stop_when_finished())
    completed = await worker.run_forever(handle_signals=False)
    ended = time.time()
    await stopper
    await backend.close()
    return {
        "completed": completed,
        "counts": dict(counting.counts),
        "http": dict(http) if http is not None else None,
        "ended": ended,
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "hwm_kb": _status_kb("VmHWM"),
        "rss_kb": _status_kb("VmRSS"),
    }


def _status_kb(field: str) -> int:
    """A ``/proc/self/status`` figure in KiB. ``VmHWM`` is the peak RSS of this process's own
    memory; ``ru_maxrss`` is not, on Linux: exec keeps the high-water mark of the forked copy of
    the parent, so a spawned worker reports at least the benchmark's own RSS at spawn time."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def _run_workers(job: _Job, processes: int, timeout: float = 300) -> tuple[float, list[dict[str, Any]]]:
    """Seconds from the barrier to the last worker done, and every worker's report."""
    ctx = mp.get_context("spawn")
    done, finished, ready, go, results = (
        ctx.Value("i", 0),
        ctx.Event(),
        ctx.Semaphore(0),
        ctx.Event(),
        ctx.Queue(),
    )
    procs = [
        ctx.Process(target=_worker_process, args=(job, done, finished, ready, go, results), daemon=True)
        for _ in range(processes)
    ]
    with running(procs):
        for _ in procs:
            if not ready.acquire(timeout=60):
                raise RuntimeError("a worker process did not start")
        started = time.time()
        go.set()
        reports = [results.get(timeout=timeout) for _ in procs]
        for p in procs:
            p.join(timeout=30)
    return max(r["ended"] for r in reports) - started, reports


# -- stores ------------------------------------------------------------------------------------------
class _Local:
    name = "local"

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="objstore-wfp-bench-e2e-"))

    async def fresh(self, objects: list[tuple[str, bytes]]) -> tuple[str, dict[str, Any]]:
        root = self.base / uuid.uuid4().hex[:8]
        await asyncio.to_thread(bulk.write_local, root, objects)
        return str(root), {}

    async def close(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


class _Moto:
    name = "moto"

    def __init__(self, moto: Moto) -> None:
        from aiobotocore.session import get_session

        self.moto = moto
        self.bucket = moto.new_bucket()
        self._cm = get_session().create_client("s3", **moto.client_kwargs())
        self.client: Any = None

    async def fresh(self, objects: list[tuple[str, bytes]]) -> tuple[str, dict[str, Any]]:
        if self.client is None:
            self.client = await self._cm.__aenter__()
        prefix = uuid.uuid4().hex[:8]
        await bulk.write_s3(self.client, self.bucket, f"{prefix}/", objects)
        return f"s3://{self.bucket}/{prefix}", self.moto.storage_options()

    async def close(self) -> None:
        if self.client is not None:
            await self._cm.__aexit__(None, None, None)


async def _submit_cost(url: str, options: dict[str, Any], n: int = 20) -> dict[str, float]:
    """Requests of ``Client.submit`` per instance, counted on ``n`` submissions (on S3, HTTP
    requests by S3 operation; elsewhere store operations)."""
    counting = CountingStore(open_store(url, **options))
    backend = ObjectStoreBackend(counting)
    await backend.verify_store()
    counting.reset()
    http = await count_http(counting.inner) if url.startswith("s3://") else None
    client = Client(backend)
    for _ in range(n):
        await client.submit(bench_flow(), 1)
    await backend.close()
    return {op: c / n for op, c in (http if http is not None else counting.counts).items()}


async def end_to_end(
    report: Report,
    moto: Moto | None,
    *,
    instances: dict[str, int],
    worker_counts: tuple[int, ...],
    reps: int,
    concurrency: int,
) -> None:
    """Figure 4, on local disk and (when given) moto_server."""
    flow = bench_flow()
    waiting = await bulk.template(bulk.ready_instance(flow.definition_hash, flow.task_names()[0]))
    stores: list[Any] = [_Local()] + ([_Moto(moto)] if moto is not None else [])
    try:
        for store in stores:
            n = instances[store.name]
            tasks = n * STEPS
            url, options = await store.fresh([])
            submit = await _submit_cost(url, options)
            rates: dict[int, list[float]] = {w: [] for w in worker_counts}
            per_task: dict[int, list[float]] = {w: [] for w in worker_counts}
            cost: dict[int, list[float]] = {w: [] for w in worker_counts}
            for rep in range(reps):
                # Alternate the order so slow drifts of a shared machine hit every count alike.
                order = worker_counts if rep % 2 == 0 else tuple(reversed(worker_counts))
                for workers in order:
                    objects = list(bulk.copies(waiting, (bulk.instance_id(i) for i in range(n))))
                    url, options = await store.fresh(objects)
                    seconds, reports = await asyncio.to_thread(
                        _run_workers, _Job(url, options, tasks, concurrency), workers
                    )
                    recorded = sum(r["completed"] for r in reports)
                    if recorded < tasks:
                        raise RuntimeError(f"{store.name}: only {recorded} of {tasks} tasks completed")
                    # What S3 bills: HTTP requests where there is a wire, else store operations.
                    counts: Counter[str] = Counter()
                    for r in reports:
                        counts.update(r["http"] if r["http"] is not None else r["counts"])
                    rates[workers].append(tasks / seconds)
                    per_task[workers].append(sum(counts.values()) / tasks)
                    worker_dollars = dollars(counts) / tasks
                    submit_dollars = dollars(submit) / STEPS
                    cost[workers].append((worker_dollars + submit_dollars) * 1e6)
            one = median(rates[worker_counts[0]])
            for workers in worker_counts:
                rate = median(rates[workers])
                report.add(
                    Row(
                        "4",
                        f"{store.name} runtime, {workers} worker process{'es' if workers > 1 else ''}",
                        f"{rate:,.1f} tasks/s",
                        f"{one:,.1f} tasks/s with {worker_counts[0]}",
                        f"{rate / one:.2f}x",
                        f"{median(per_task[workers]):.1f} (+{sum(submit.values()):.0f} submit)"
                        + (" HTTP" if store.name == "moto" else ""),
                        f"${median(cost[workers]):,.2f}/M tasks; {tasks} tasks, concurrency {concurrency}"
                        f"/process; median of {reps} {spread(rates[workers])}",
                    )
                )
    finally:
        for store in stores:
            await store.close()


async def memory(report: Report, *, tasks: int, baseline_tasks: int, concurrency: int) -> None:
    """Figure 5: peak RSS of one local-disk worker process running ``tasks`` tasks."""
    flow = bench_flow(MEMORY_STEPS)
    waiting = await bulk.template(bulk.ready_instance(flow.definition_hash, flow.task_names()[0]))
    store = _Local()
    try:
        peaks = {}
        for n in (baseline_tasks, tasks):
            objects = list(bulk.copies(waiting, (bulk.instance_id(i) for i in range(n // MEMORY_STEPS))))
            url, options = await store.fresh(objects)
            started = time.perf_counter()
            _, reports = await asyncio.to_thread(
                _run_workers, _Job(url, options, n, concurrency, MEMORY_STEPS), 1, 900
            )
            report_ = reports[0]
            peaks[n] = (
                report_["hwm_kb"] / 1024,
                report_["rss_kb"] / 1024,
                time.perf_counter() - started,
                report_["maxrss_kb"] / 1024,
            )
        big, small = peaks[tasks], peaks[baseline_tasks]
        report.add(
            Row(
                "5",
                f"peak RSS of a worker process, {tasks:,} tasks",
                f"{big[0]:.1f} MiB",
                f"{small[0]:.1f} MiB after {baseline_tasks}",
                f"{big[0] / small[0]:.2f}x",
                "",
                f"VmHWM; local disk, {MEMORY_STEPS}-step flow, concurrency {concurrency}; "
                f"RSS at the end {big[1]:.1f} vs {small[1]:.1f} MiB; getrusage ru_maxrss "
                f"{big[3]:.1f} MiB (inherits the parent's); one run each ({big[2]:.0f}s)",
            )
        )
    finally:
        await store.close()
