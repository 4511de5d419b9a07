"""Takeover latency after a holder dies: how long past the TTL a polling claimer gets the task.

``python -m benchmarks.takeover [--no-moto] [--rounds N] [--ttl S]``. Each round a holder claims
``TASKS`` tasks and dies (never renews); claimers whose wall clocks are an hour off poll every
``POLL`` seconds with ``claim_task``. Latency is real time (``time.monotonic``) from when the
holder sent its claim plus the TTL to when a claimer got it. On moto_server the claimers are
timed twice: on this machine (the holder's monotonic stamp times the lease) and as another
machine (only the server's ``Last-Modified``/``Date``, to the second, can).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import timedelta
from typing import Any

from objstore_wfp import AtTask, ObjectStoreBackend, OffsetClock, WorkflowSnapshot

TASKS = 10
POLL = 0.02
HOUR = timedelta(hours=1)


async def _round(url: str, options: dict[str, Any], ttl: float, claimer_domain: str | None) -> list[float]:
    holder_clock = OffsetClock(-HOUR)
    claimer_clock = OffsetClock(HOUR) if claimer_domain is None else OffsetClock(HOUR, domain=claimer_domain)
    instances = [f"takeover-{uuid.uuid4().hex[:8]}" for _ in range(TASKS)]
    sent: dict[str, float] = {}
    async with ObjectStoreBackend.from_url(url, clock=holder_clock, **options) as holder:
        for instance in instances:
            snap = WorkflowSnapshot(instance, "takeover")
            snap.update_position(AtTask("t"))
            await holder.save_snapshot(snap)
            sent[instance] = time.monotonic()
            assert await holder.claim_task(instance, "t", "holder", timedelta(seconds=ttl)) is not None
    latencies: list[float] = []
    async with ObjectStoreBackend.from_url(url, clock=claimer_clock, **options) as claimer:

        async def take(instance: str) -> None:
            while True:
                if await claimer.claim_task(instance, "t", "claimer", timedelta(seconds=ttl)):
                    latencies.append(time.monotonic() - sent[instance] - ttl)
                    return
                await asyncio.sleep(POLL)

        await asyncio.gather(*(take(i) for i in instances))
    return latencies


async def measure(
    name: str, url: str, options: dict[str, Any], ttl: float, rounds: int, domain: str | None
) -> None:
    latencies: list[float] = []
    for _ in range(rounds):
        latencies += await _round(url, options, ttl, domain)
    print(
        f"{name:<28} ttl {ttl:.1f} s, {len(latencies)} takeovers: past the TTL by median "
        f"{statistics.median(latencies):.3f} s, worst {max(latencies):.3f} s, "
        f"earliest {min(latencies):+.3f} s",
        flush=True,
    )


async def main(use_moto: bool, rounds: int, ttl: float) -> None:
    with tempfile.TemporaryDirectory() as root:
        await measure("local disk", root, {}, ttl, rounds, None)
    if not use_moto:
        return
    from benchmarks.moto import moto_server

    with moto_server() as moto:
        bucket = moto.new_bucket()
        options = moto.storage_options()
        await measure("moto, same machine", f"s3://{bucket}/same", options, ttl, rounds, None)
        await measure(
            "moto, another machine", f"s3://{bucket}/other", options, ttl, rounds, "another-machine"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-moto", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ttl", type=float, default=2.0)
    args = parser.parse_args()
    asyncio.run(main(not args.no_moto, args.rounds, args.ttl))
