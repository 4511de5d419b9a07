"""Figure 3: ``find_available_tasks`` as idle instances pile up.

The store holds ``READY`` instances waiting at a task, plus 100, then 1,000, then 10,000
completed instances (each a snapshot and a released claim, as the backend leaves them). At
each size a worker asks ``find_available_tasks(limit=READY)`` several times; the figure is the
median latency, the ratio compares it with the same query at the smallest size, and the
requests per query are counted. The backend never reads an idle instance, so the request
count must not move; the latency may only follow the store's own LIST cost.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from benchmarks import bulk
from benchmarks.common import Report, Row, median, spread
from benchmarks.moto import Moto
from objstore_wfp.backends.objectstore import ObjectStoreBackend
from objstore_wfp.stores.base import ConditionalStore
from objstore_wfp.stores.counting import CountingStore
from objstore_wfp.stores.local import LocalStore

READY = 10


async def _measure(
    report: Report,
    where: str,
    store: ConditionalStore,
    write: Callable[[list[tuple[str, bytes]]], Awaitable[int]],
    sizes: Sequence[int],
    queries: int,
) -> None:
    idle = await bulk.template(bulk.completed_instance)
    waiting = await bulk.template(bulk.ready_instance("flow-v1", "t"))
    await write(list(bulk.copies(waiting, (bulk.instance_id(i, "r") for i in range(READY)))))
    counting = CountingStore(store)
    backend = ObjectStoreBackend(counting, verify_conditional_writes=False)
    have = 0
    first: float | None = None
    for size in sizes:
        started = time.perf_counter()
        await write(list(bulk.copies(idle, (bulk.instance_id(i) for i in range(have, size)))))
        built = time.perf_counter() - started
        have = size
        await backend.find_available_tasks("bench-finder", READY)  # warm caches and connections
        latencies, requests = [], []
        for _ in range(queries):
            counting.reset()
            started = time.perf_counter()
            found = await backend.find_available_tasks("bench-finder", READY)
            latencies.append(time.perf_counter() - started)
            requests.append(counting.total)
            assert len(found) == READY, f"expected {READY} tasks, found {len(found)}"
        latency = median(latencies)
        first = first if first is not None else latency
        report.add(
            Row(
                "3",
                f"{where} find_available_tasks, {size:,} idle",
                f"{latency * 1000:.1f} ms",
                f"{first * 1000:.1f} ms at {sizes[0]:,}",
                f"{latency / first:.2f}x",
                f"{median(requests):g}",
                f"limit={READY}, {READY} ready; median of {queries} {spread(latencies)}, "
                f"min {min(latencies) * 1000:.1f} ms; "
                f"built in {built:.0f}s",
            )
        )
    await backend.close()


async def local_scaling(report: Report, *, sizes: Sequence[int], queries: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="objstore-wfp-bench-scaling-"))

    async def write(items: list[tuple[str, bytes]]) -> int:
        return await asyncio.to_thread(bulk.write_local, root, items)

    try:
        await _measure(report, "local", LocalStore(root), write, sizes, queries)
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def s3_scaling(report: Report, moto: Moto, *, sizes: Sequence[int], queries: int) -> None:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    from objstore_wfp.stores.s3 import S3Store

    bucket = moto.new_bucket()
    config = AioConfig(retries={"total_max_attempts": 3}, max_pool_connections=32)
    async with get_session().create_client("s3", config=config, **moto.client_kwargs()) as client:

        async def write(items: list[tuple[str, bytes]]) -> int:
            return await bulk.write_s3(client, bucket, "scaling/", items)

        store = S3Store(f"{bucket}/scaling", **moto.storage_options())
        await _measure(report, "moto", store, write, sizes, queries)
