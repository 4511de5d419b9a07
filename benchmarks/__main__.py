"""``python -m benchmarks``: run the suite and print one table (see benchmarks/README.md).

``--quick`` shrinks every size for a smoke run; ``--only 1,3`` runs some figures;
``--no-moto`` skips everything that needs ``moto_server``; ``--moto-10k`` also takes figure 3 on
moto to 10,000 idle instances (bulk-writing 20,000 objects into moto takes minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Iterator

from benchmarks import client_cpu, e2e, floor, ops, scaling
from benchmarks.common import Report, machine
from benchmarks.moto import Moto, moto_server


@contextlib.contextmanager
def _maybe_moto(wanted: bool) -> Iterator[Moto | None]:
    if not wanted:
        yield None
        return
    with moto_server() as moto:
        yield moto


async def run(figures: set[str], *, quick: bool, use_moto: bool, moto_10k: bool) -> Report:
    report = Report()
    with _maybe_moto(use_moto and bool(figures & {"2", "3", "4", "6", "7"})) as moto:
        if "1" in figures:
            print("1. local disk operations vs the raw floor", flush=True)
            await ops.local_ops(report, n=30 if quick else 100, reps=3 if quick else 5)
        if "2" in figures and moto is not None:
            print("2. S3 (moto_server) operations vs raw aiobotocore", flush=True)
            await ops.s3_ops(report, moto, n=16 if quick else 48, reps=3 if quick else 5, concurrency=8)
        if "3" in figures:
            print("3. find_available_tasks as idle instances grow", flush=True)
            sizes = (100, 1_000) if quick else (100, 1_000, 10_000)
            await scaling.local_scaling(report, sizes=sizes, queries=31)
            if moto is not None:
                await scaling.s3_scaling(report, moto, sizes=sizes if moto_10k else sizes[:2], queries=9)
        if "4" in figures:
            print("4. the runtime end to end", flush=True)
            await e2e.end_to_end(
                report,
                moto,
                instances={"local": 20, "moto": 10} if quick else {"local": 100, "moto": 25},
                worker_counts=(1, 2, 4),
                reps=1 if quick else 3,
                concurrency=4,
            )
        if "5" in figures:
            print("5. worker memory", flush=True)
            await e2e.memory(report, tasks=1_000 if quick else 10_000, baseline_tasks=100, concurrency=16)
        if "6" in figures and moto is not None:
            print(
                "6. client CPU per request and per task: s3fs/aiobotocore vs obstore (moto_server)",
                flush=True,
            )
            await client_cpu.client_cpu(
                report, moto, n=40 if quick else 200, instances=4 if quick else 20, reps=3
            )
        if "7" in figures:
            print("7. requests per task", flush=True)
            await floor.floor_report(report, moto, instances=20 if quick else 60)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not figures")
    parser.add_argument("--only", default="1,2,3,4,5,6,7", help="comma-separated figures to run")
    parser.add_argument("--no-moto", action="store_true", help="skip the S3 (moto_server) figures")
    parser.add_argument("--moto-10k", action="store_true", help="figure 3 on moto up to 10,000 idle too")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so moto_server and the temporary directories are cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    figures = {f.strip() for f in args.only.split(",") if f.strip()}
    description = machine()
    started = time.monotonic()
    report = asyncio.run(run(figures, quick=args.quick, use_moto=not args.no_moto, moto_10k=args.moto_10k))
    print()
    print(description)
    print(f"suite ran in {time.monotonic() - started:.0f}s")
    print()
    print(report.table())


if __name__ == "__main__":
    main()
