"""Figure 6: requests per completed task, by kind, submit included (issue 11's request floor).

A batch of instances of a flow is submitted through ``Client.submit`` and run to the end by 1 or 4
workers, each with a backend of its own over one store (asyncio workers in one process, or worker
processes). Every request is counted: store operations by :class:`CountingStore` (a LIST per
1,000-key page), and on S3 also on the wire, by S3 operation. Billable requests are PUT, POST and
LIST (S3 Standard charges them 12.5x a GET); GET and DELETE are counted apart. The cost per
million tasks uses S3 Standard list prices (``benchmarks.common.dollars``).

Flows: ``chain3`` (three steps) and ``forkjoin`` (a step, a fork of two, a join: four tasks).
Requests do not depend on timing except for lost claim races between workers, which is what the
4-worker rows show. ``tests/test_request_floor.py`` asserts the bounds on the same measurement.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from benchmarks.common import Report, Row, dollars
from benchmarks.moto import Moto, count_http
from objstore_wfp.backends.objectstore import ObjectStoreBackend
from objstore_wfp.runtime import Client, Flow, Worker, WorkerEvent
from objstore_wfp.runtime.flow import Step
from objstore_wfp.stores.base import ConditionalStore
from objstore_wfp.stores.counting import CountingStore
from objstore_wfp.stores.s3 import S3Store

#: Billable on S3 (PUT, POST, LIST), as store operations and as S3 operations on the wire.
BILLABLE = frozenset({"put", "put_if_absent", "put_if_version", "list", "PutObject", "ListObjectsV2"})
#: Issue 11's bounds per completed task, and the most that 4 workers may spend per task over 1.
MAX_BILLABLE = 5.0
MAX_TOTAL = 8.0
MAX_FLEET_RATIO = 1.25
READS = frozenset({"get", "GetObject", "HeadObject"})


async def _inc(x: int) -> int:
    return x + 1


async def _total(outputs: dict[str, int]) -> int:
    return sum(outputs.values())


FLOWS: dict[str, Flow] = {
    "chain3": Flow("floor-chain3").step(_inc, name="a").step(_inc, name="b").step(_inc, name="c"),
    "forkjoin": Flow("floor-forkjoin")
    .step(_inc, name="a")
    .fork(Step("b1", _inc), Step("b2", _inc))
    .join(_total, name="j"),
}
TASKS_PER_INSTANCE = {"chain3": 3, "forkjoin": 4}


@dataclass(frozen=True)
class Floor:
    """Requests per completed task: ``by_kind`` (store operations or S3 operations) and sums."""

    flow: str
    workers: str
    tasks: int
    by_kind: dict[str, float]

    @property
    def billable(self) -> float:
        return sum(v for k, v in self.by_kind.items() if k in BILLABLE)

    @property
    def reads(self) -> float:
        return sum(v for k, v in self.by_kind.items() if k in READS)

    @property
    def total(self) -> float:
        return sum(self.by_kind.values())


async def _run_workers(
    open_store: Callable[[], ConditionalStore], flow: Flow, workers: int, tasks: Any
) -> Counter[str]:
    """Run ``workers`` long-lived workers (``run_forever``, as a deployment does) until
    ``tasks`` (a shared counter with ``value`` and ``get_lock``) reaches zero."""
    counted: list[CountingStore] = []
    wire: list[Counter[str]] = []
    running: list[Worker] = []

    def recorded(event: WorkerEvent) -> None:
        if event.kind in ("recorded", "duplicate"):
            with tasks.get_lock():
                tasks.value -= 1

    async def watch() -> None:
        # The counter is shared with other processes: poll it (bounded by the run itself).
        for _ in range(600_000):
            if tasks.value <= 0:
                break
            await asyncio.sleep(0.01)
        for worker in running:
            worker.stop()

    async def one(n: int) -> None:
        store = CountingStore(open_store())
        counted.append(store)
        if isinstance(store.inner, S3Store):
            wire.append(await count_http(store.inner))
        backend = ObjectStoreBackend(store, verify_conditional_writes=False)
        worker = Worker(
            backend,
            [flow],
            worker_id=f"w{n}-{uuid.uuid4().hex[:4]}",
            concurrency=4,
            lease=timedelta(minutes=5),
            poll_interval=0.02,
            on_event=recorded,
        )
        running.append(worker)
        try:
            await worker.run_forever(handle_signals=False)
        finally:
            await backend.close()

    await asyncio.gather(watch(), *(one(n) for n in range(workers)))
    total: Counter[str] = Counter()
    # On S3 the wire is the truth (the adapter's own checks included); elsewhere store calls.
    for counts in wire or [store.counts for store in counted]:
        total.update(counts)
    return total


def _process(url: str, options: dict[str, Any], flow_name: str, tasks: Any, out: Any) -> None:
    from objstore_wfp.stores.urls import open_store

    counts = asyncio.run(_run_workers(lambda: open_store(url, **options), FLOWS[flow_name], 1, tasks))
    out.put(dict(counts))


async def measure(
    url: str,
    options: dict[str, Any],
    flow_name: str,
    instances: int,
    workers: int,
    *,
    processes: bool = False,
) -> Floor:
    """Submit ``instances`` of the flow under ``url`` (a fresh prefix is the caller's business),
    run them with ``workers`` workers, and return the requests per completed task."""
    from objstore_wfp.stores.urls import open_store

    flow = FLOWS[flow_name]
    submit_store = CountingStore(open_store(url, **options))
    backend = ObjectStoreBackend(submit_store)
    await backend.verify_store()
    await backend.list_snapshots()  # the one-time layout check is not part of a submit
    submit_store.reset()
    wire = await count_http(submit_store.inner) if isinstance(submit_store.inner, S3Store) else None
    client = Client(backend, [flow])
    ids = [await client.submit(flow, n, instance_id=f"i{n:05d}") for n in range(instances)]
    counts: Counter[str] = Counter(wire if wire is not None else submit_store.counts)
    tasks = instances * TASKS_PER_INSTANCE[flow_name]
    ctx = mp.get_context("spawn")
    remaining = ctx.Value("i", tasks)
    if processes:
        out = ctx.Queue()
        procs = [
            ctx.Process(target=_process, args=(url, options, flow_name, remaining, out))
            for _ in range(workers)
        ]
        for p in procs:
            p.start()
        for _ in procs:
            counts.update(await asyncio.to_thread(out.get, True, 600))
        for p in procs:
            p.join()
    else:
        counts.update(await _run_workers(lambda: open_store(url, **options), flow, workers, remaining))
    unfinished = [i for i in ids if not (await backend.load_snapshot(i)).is_terminal]
    await backend.close()
    if unfinished:
        raise RuntimeError(f"{len(unfinished)} instance(s) left unfinished, e.g. {unfinished[0]!r}")
    tasks = instances * TASKS_PER_INSTANCE[flow_name]
    label = f"{workers} {'processes' if processes else 'asyncio'}" if workers > 1 else "1"
    return Floor(flow_name, label, tasks, {k: v / tasks for k, v in counts.items()})


def local_url() -> str:
    return tempfile.mkdtemp(prefix=f"objstore-wfp-floor-{uuid.uuid4().hex[:6]}-")


async def floor_report(report: Report, moto: Moto | None, *, instances: int, processes: bool = True) -> None:
    """Figure 7: requests per task for chain3 and forkjoin, 1 and 4 workers, local disk and
    moto_server (on the wire), with the cost per million tasks."""
    stores: list[tuple[str, Callable[[], tuple[str, dict[str, Any]]]]] = [
        ("local", lambda: (local_url(), {}))
    ]
    if moto is not None:
        bucket = moto.new_bucket()
        stores.append(("moto", lambda: (f"s3://{bucket}/{uuid.uuid4().hex[:8]}", moto.storage_options())))
    for store_name, fresh in stores:
        for flow_name in FLOWS:
            one: Floor | None = None
            runs = [(1, False), (4, False)] + ([(4, True)] if processes else [])
            for workers, in_processes in runs:
                url, options = fresh()
                floor = await measure(url, options, flow_name, instances, workers, processes=in_processes)
                one = one or floor
                kinds = ", ".join(f"{k} {v:.2f}" for k, v in sorted(floor.by_kind.items()))
                report.add(
                    Row(
                        "7. requests per task",
                        f"{store_name} {flow_name}, {floor.workers} worker(s)",
                        f"{floor.billable:.2f} billable, {floor.total:.2f} in all",
                        "1 worker" if floor is not one else "",
                        f"{floor.billable / one.billable:.2f}x / {floor.total / one.total:.2f}x"
                        if floor is not one
                        else "",
                        kinds,
                        f"${dollars(floor.by_kind) * 1e6:.2f} per million tasks",
                    )
                )
