"""Figure 6: the client's own CPU per request and per completed task, s3fs/aiobotocore against
obstore, on moto_server (``python -m benchmarks --only 6``, or ``python -m benchmarks.client_cpu``).

On a serverless worker the client's CPU is billed time. CPU is the benchmark process's user +
system time (``time.process_time``: every thread, so obstore's tokio threads count too); moto_server
is another process and does not. Wall time is given alongside. Requests are sequential, objects
are 2 KiB, and each repetition measures both adapters back to back, alternating which goes first
(medians of ``reps``), each on a fresh prefix of one bucket, after a few warm-up requests.

- per request: ``put_if_absent`` of fresh keys, ``get`` of them, ``put_if_version`` on them, and
  ``list`` of a prefix of 100 keys (one LIST request, 100 keys parsed);
- per task: a 3-step chain of trivial ``async`` steps, run by one in-process
  :class:`~objstore_wfp.runtime.Worker` (``run_until_idle``, concurrency 1) over instances
  submitted beforehand; CPU and store requests (counted by
  :class:`~objstore_wfp.stores.counting.CountingStore`) divided by the tasks completed. The
  store probe and the submissions are outside the measurement.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from benchmarks.common import Report, Row, spread
from benchmarks.e2e import bench_flow
from benchmarks.moto import Moto, moto_server
from objstore_wfp.backends.objectstore import ObjectStoreBackend
from objstore_wfp.runtime import Client, Worker
from objstore_wfp.stores.base import ConditionalStore
from objstore_wfp.stores.counting import CountingStore
from objstore_wfp.stores.urls import open_store

#: The adapters compared, by the URL scheme that selects each.
ADAPTERS = {"s3fs": "s3", "obstore": "s3+obstore"}
PAYLOAD = 2048
#: Keys under the listed prefix (one LIST request).
LISTED = 100
CHAIN = 3


async def _measure(work: Callable[[], Awaitable[int]]) -> tuple[float, float]:
    """``(cpu, wall)`` seconds per unit of work, ``work()`` returning how many units it did."""
    cpu, wall = time.process_time(), time.perf_counter()
    units = await work()
    return (time.process_time() - cpu) / units, (time.perf_counter() - wall) / units


async def _requests(store: ConditionalStore, n: int) -> dict[str, tuple[float, float, float]]:
    """Per request of each operation: ``(cpu, wall, store requests)``; ``n`` calls each (list:
    ``n // 4``), every one a single request."""
    payload = os.urandom(PAYLOAD)
    keys = [f"k/{i:05d}" for i in range(n)]
    versions: dict[str, str] = {}
    for i in range(LISTED):  # also warms up: connections, credentials, first-call imports
        await store.put_if_absent(f"l/{i:03d}", payload)
        await store.get(f"l/{i:03d}")

    async def create() -> int:
        for key in keys:
            version = await store.put_if_absent(key, payload)
            assert version is not None
            versions[key] = version
        return n

    async def read() -> int:
        for key in keys:
            assert await store.get(key) is not None
        return n

    async def swap() -> int:
        for key in keys:
            version = await store.put_if_version(key, payload[::-1] + key.encode(), versions[key])
            assert version is not None
        return n

    async def listing() -> int:
        for _ in range(n // 4):
            assert len([o async for o in store.list("l/")]) == LISTED
        return n // 4

    return {
        "put_if_absent": (*await _measure(create), 1.0),
        "get": (*await _measure(read), 1.0),
        "put_if_version": (*await _measure(swap), 1.0),
        f"list ({LISTED} keys)": (*await _measure(listing), 1.0),
    }


async def _task_cost(url: str, options: dict[str, Any], instances: int) -> tuple[float, float, float]:
    """Per completed task: ``(cpu, wall, store requests)``."""
    counting = CountingStore(open_store(url, **options))
    flow = bench_flow(CHAIN)
    async with ObjectStoreBackend(counting) as backend:
        await backend.verify_store()
        client = Client(backend)
        for i in range(instances):
            await client.submit(flow, i)
        worker = Worker(backend, [flow], concurrency=1, lease=timedelta(minutes=5))
        counting.reset()
        completed = 0

        async def run() -> int:
            nonlocal completed
            completed = await worker.run_until_idle()
            return completed

        cpu, wall = await _measure(run)
        assert completed == instances * CHAIN, completed
        return cpu, wall, counting.total / completed


async def client_cpu(report: Report, moto: Moto, *, n: int, instances: int, reps: int) -> None:
    bucket = moto.new_bucket()
    options = moto.storage_options()
    per_request: dict[str, dict[str, list[tuple[float, float, float]]]] = {a: {} for a in ADAPTERS}
    per_task: dict[str, list[tuple[float, float, float]]] = {a: [] for a in ADAPTERS}
    for rep in range(reps):
        order = list(ADAPTERS) if rep % 2 == 0 else list(reversed(ADAPTERS))
        for adapter in order:
            store = open_store(f"{ADAPTERS[adapter]}://{bucket}/{uuid.uuid4().hex[:8]}", **options)
            try:
                for op, figures in (await _requests(store, n)).items():
                    per_request[adapter].setdefault(op, []).append(figures)
            finally:
                await store.close()
        for adapter in order:
            url = f"{ADAPTERS[adapter]}://{bucket}/{uuid.uuid4().hex[:8]}"
            per_task[adapter].append(await _task_cost(url, options, instances))

    def us(values: list[float]) -> str:
        return f"{statistics.median(values) * 1e6:,.0f} us"

    baseline, candidate = ADAPTERS
    rows: dict[str, dict[str, list[tuple[float, float, float]]]] = {
        f"per {op}": {a: per_request[a][op] for a in ADAPTERS} for op in per_request[baseline]
    }
    rows[f"per task ({CHAIN}-step chain, 1 in-process worker)"] = {a: per_task[a] for a in ADAPTERS}
    for name, figures in rows.items():
        cpu = {a: [f[0] for f in figures[a]] for a in ADAPTERS}
        wall = {a: [f[1] for f in figures[a]] for a in ADAPTERS}
        requests = {
            a: statistics.median(f[2] for f in figures[a]) if figures[a][0][2:] else 1.0 for a in ADAPTERS
        }
        report.add(
            Row(
                "6",
                f"client CPU {name}, obstore vs s3fs",
                us(cpu[candidate]),
                us(cpu[baseline]),
                f"{statistics.median(cpu[candidate]) / statistics.median(cpu[baseline]):.2f}x",
                f"{requests[candidate]:.1f} / {requests[baseline]:.1f}",
                f"wall {us(wall[candidate])} vs {us(wall[baseline])}; {reps} reps, "
                f"{spread(cpu[candidate])} / {spread(cpu[baseline])}",
            )
        )


def main() -> None:
    report = Report()
    with moto_server() as moto:
        asyncio.run(client_cpu(report, moto, n=200, instances=20, reps=3))
    print()
    print(report.table())


if __name__ == "__main__":
    main()
