"""``python -m benchmarks.workercpu``: where one worker's CPU per task goes, on local disk.

One :class:`~objstore_wfp.runtime.Worker` (concurrency 4, in its own process) runs ``N``
instances of a chain of three trivial ``async`` steps, submitted beforehand, until idle. The
figures are per task, over that run only (the submissions and the store probe are outside it):

- **CPU**: user and system time of the whole process, its threads included (``getrusage``);
- **context switches** (voluntary + involuntary, all threads): every hand-off of a write to a
  thread and back costs some;
- **store requests** by kind (:class:`~objstore_wfp.stores.counting.CountingStore`).

Two variants run alternately, ``--reps`` times each, and each figure is the median:

- ``durable``: the store as shipped;
- ``no fsync``: the same run with ``os.fsync`` replaced by a no-op in that process, so the
  difference is what fsync (of the written files and of their directories) costs in CPU. Not a
  mode of the store: a worker without fsync would lose acknowledged writes in a power cut.

``--profile FILE`` writes a cProfile of one more ``durable`` run (the event loop's thread only:
the writes' threads are not in it).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import tempfile
from datetime import timedelta
from typing import Any

from benchmarks.e2e import bench_flow
from objstore_wfp.backends.objectstore import ObjectStoreBackend
from objstore_wfp.runtime import Client, Worker
from objstore_wfp.stores.counting import CountingStore
from objstore_wfp.stores.urls import open_store

STEPS = 3
VARIANTS = ("durable", "no fsync")


def _usage() -> tuple[float, float, int]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime, usage.ru_nvcsw + usage.ru_nivcsw


async def _run(root: str, instances: int, profile: str | None) -> dict[str, Any]:
    flow = bench_flow(STEPS)
    async with ObjectStoreBackend.from_url(root) as backend:
        client = Client(backend)
        for i in range(instances):
            await client.submit(flow, i, instance_id=f"i{i}")
    counting = CountingStore(open_store(root))
    backend = ObjectStoreBackend(counting)
    await backend.verify_store()
    counting.reset()
    worker = Worker(backend, [flow], concurrency=4, lease=timedelta(minutes=5), poll_interval=0.1)
    profiler = cProfile.Profile()
    user, system, switches = _usage()
    if profile is not None:
        profiler.enable()
    done = await worker.run_until_idle()
    if profile is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    after = _usage()
    await backend.close()
    tasks = instances * STEPS
    if done != tasks:
        raise RuntimeError(f"{done} of {tasks} tasks completed")
    return {
        "user": (after[0] - user) / tasks,
        "sys": (after[1] - system) / tasks,
        "switches": (after[2] - switches) / tasks,
        "requests": {op: n / tasks for op, n in counting.counts.items()},
    }


def _child(variant: str, instances: int, profile: str | None, results: Any) -> None:
    if variant == "no fsync":
        os.fsync = lambda fd: None  # this benchmark process only: see the module docstring
    root = tempfile.mkdtemp(prefix="objstore-wfp-bench-workercpu-")
    try:
        results.put(asyncio.run(_run(root, instances, profile)))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(variant: str, instances: int, profile: str | None = None) -> dict[str, Any]:
    """One run of ``variant`` in a fresh process; its figures per task (seconds, counts)."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    process = ctx.Process(target=_child, args=(variant, instances, profile, results))
    process.start()
    try:
        return dict(results.get(timeout=600))
    finally:
        process.join(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workercpu", description=__doc__)
    parser.add_argument("--instances", type=int, default=300, help=f"instances per run ({STEPS} tasks each)")
    parser.add_argument("--reps", type=int, default=3, help="runs per variant (the median is shown)")
    parser.add_argument("--profile", metavar="FILE", help="also write a cProfile of one durable run")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for rep in range(args.reps):
        for variant in VARIANTS if rep % 2 == 0 else VARIANTS[::-1]:
            runs[variant].append(run(variant, args.instances))
    for variant in VARIANTS:
        cell = runs[variant]

        def median(field: str, cell: list[dict[str, Any]] = cell) -> float:
            return float(statistics.median(r[field] for r in cell))

        total = statistics.median(r["user"] + r["sys"] for r in cell)
        requests = {op: round(n, 2) for op, n in cell[0]["requests"].items()}
        print(
            f"{variant:9} CPU/task {total * 1e3:.2f} ms (user {median('user') * 1e3:.2f}, "
            f"sys {median('sys') * 1e3:.2f}; runs "
            + ", ".join(f"{(r['user'] + r['sys']) * 1e3:.2f}" for r in cell)
            + f"), context switches/task {median('switches'):.1f}, requests/task "
            f"{sum(requests.values()):.2f} {requests}"
        )
    print(f"load average {os.getloadavg()[0]:.2f}; {args.instances} instances x {STEPS} tasks per run")
    if args.profile:
        run("durable", args.instances, args.profile)
        print(f"profile of one durable run: {args.profile}")


if __name__ == "__main__":
    main()
