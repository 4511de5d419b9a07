"""Figures 1 and 2: single backend operations against the raw floor of the same store.

One repetition runs four phases over ``n`` instances, each phase timed for the backend and for
the raw baseline back to back (the order alternates between repetitions):

- ``save_snapshot``: a new instance (4 recorded results, 256 B each, at task ``t``).
  Raw: the same snapshot bytes written durably (local: temp file + fsync + rename + directory
  fsync; S3: PutObject with ``If-None-Match: *``).
- ``load_snapshot``: read it back. Raw: open/read (S3: GetObject and its body).
- ``claim_task``: first claim of task ``t``. Raw: the same claim bytes created exclusively
  (local: ``O_CREAT|O_EXCL`` + fsync + directory fsync; S3: PutObject ``If-None-Match: *``).
- ``save_task_result`` (fenced by that claim). Raw: read the snapshot and replace it with the
  same post-result bytes (local: read + temp/fsync/rename; S3: GetObject + PutObject ``If-Match``).

Raw payloads are the very bytes the backend stored in a warm-up round. Requests per operation
come from :class:`~objstore_wfp.stores.counting.CountingStore`, never from the documentation.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks.common import Report, Row, median, spread, timed
from benchmarks.moto import Moto, count_http
from objstore_wfp.backends import layout
from objstore_wfp.backends.objectstore import ObjectStoreBackend
from objstore_wfp.model import AtTask, TaskClaim, WorkflowSnapshot
from objstore_wfp.stores.base import ConditionalStore
from objstore_wfp.stores.counting import CountingStore
from objstore_wfp.stores.local import LocalStore

PAYLOAD = bytes(range(256))
OPS = ("save_snapshot", "load_snapshot", "claim_task", "save_task_result")
TTL = timedelta(minutes=5)


def make_snapshot(i: int) -> WorkflowSnapshot:
    snapshot = WorkflowSnapshot(f"bench-{i}", "flow-v1", initial_input=PAYLOAD)
    for k in range(4):
        snapshot.mark_task_completed(f"done-{k}", PAYLOAD)
    snapshot.update_position(AtTask("t"))
    return snapshot


def snapshot_key(i: int) -> str:
    return layout.snapshot_key(layout.encode_id(f"bench-{i}"))


def claim_key(i: int) -> str:
    return layout.claim_key(layout.encode_id(f"bench-{i}"), "t")


@dataclass
class Payloads:
    """The bytes the backend stored, so the raw side writes exactly as much."""

    snapshot: bytes
    claim: bytes
    snapshot_after: bytes


# -- the backend side ------------------------------------------------------------------------------
class BackendSide:
    def __init__(self, store: ConditionalStore, n: int, concurrency: int) -> None:
        self.counting = CountingStore(store)
        self.backend = ObjectStoreBackend(self.counting, verify_conditional_writes=False)
        self.n = n
        self.concurrency = concurrency
        self.claims: dict[int, TaskClaim] = {}
        #: HTTP requests on the wire, by S3 operation (S3 only).
        self.http: Counter[str] | None = None

    async def _each(self, fn: Callable[[int], Awaitable[object]]) -> None:
        await _each(self.n, self.concurrency, fn)

    def phase(self, op: str) -> Callable[[], Awaitable[object]]:
        backend = self.backend
        if op == "save_snapshot":
            snapshots = [make_snapshot(i) for i in range(self.n)]
            return lambda: self._each(lambda i: backend.save_snapshot(snapshots[i]))
        if op == "load_snapshot":
            return lambda: self._each(lambda i: backend.load_snapshot(f"bench-{i}"))
        if op == "claim_task":

            async def claim(i: int) -> None:
                found = await backend.claim_task(f"bench-{i}", "t", "bench-worker", TTL)
                assert found is not None
                self.claims[i] = found

            return lambda: self._each(claim)

        def result(i: int) -> Awaitable[None]:
            return backend.save_task_result(f"bench-{i}", "t", PAYLOAD, claim=self.claims[i])

        return lambda: self._each(result)

    async def payloads(self) -> Payloads:
        store = self.counting.inner
        await self.phase("save_snapshot")()
        snapshot = await store.get(snapshot_key(0))
        await self.phase("claim_task")()
        claim = await store.get(claim_key(0))
        await self.phase("save_task_result")()
        after = await store.get(snapshot_key(0))
        assert snapshot and claim and after
        return Payloads(snapshot.data, claim.data, after.data)


async def _each(n: int, concurrency: int, fn: Callable[[int], Awaitable[object]]) -> None:
    if concurrency == 1:
        for i in range(n):
            await fn(i)
        return
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await fn(i)

    await asyncio.gather(*(one(i) for i in range(n)))


# -- raw local disk ------------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_exclusive(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(path.parent)


def _replace(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    _fsync_dir(path.parent)


def _read(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class LocalRaw:
    def __init__(self, root: Path, n: int, payloads: Payloads) -> None:
        self.root, self.n, self.p = root, n, payloads

    def phase(self, op: str) -> Callable[[], Awaitable[object]]:
        root, p = self.root, self.p

        def each(fn: Callable[[int], object]) -> Callable[[], Awaitable[object]]:
            async def run() -> None:
                for i in range(self.n):
                    fn(i)

            return run

        if op == "save_snapshot":
            return each(lambda i: _replace(root / snapshot_key(i), p.snapshot))
        if op == "load_snapshot":
            return each(lambda i: _read(root / snapshot_key(i)))
        if op == "claim_task":
            return each(lambda i: _create_exclusive(root / claim_key(i), p.claim))
        return each(
            lambda i: (_read(root / snapshot_key(i)), _replace(root / snapshot_key(i), p.snapshot_after))
        )


# -- raw S3 ----------------------------------------------------------------------------------------
class S3Raw:
    def __init__(self, client: Any, bucket: str, prefix: str, n: int, concurrency: int, payloads: Payloads):
        self.client, self.bucket, self.prefix = client, bucket, prefix
        self.n, self.concurrency, self.p = n, concurrency, payloads

    async def _get(self, key: str) -> tuple[bytes, str]:
        response = await self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
        async with response["Body"] as body:
            return await body.read(), response["ETag"]

    async def _put(self, key: str, data: bytes, **condition: str) -> None:
        await self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data, **condition)

    def phase(self, op: str) -> Callable[[], Awaitable[object]]:
        p = self.p
        if op == "save_snapshot":
            return self._each(lambda i: self._put(snapshot_key(i), p.snapshot, IfNoneMatch="*"))
        if op == "load_snapshot":
            return self._each(lambda i: self._get(snapshot_key(i)))
        if op == "claim_task":
            return self._each(lambda i: self._put(claim_key(i), p.claim, IfNoneMatch="*"))

        async def result(i: int) -> None:
            _, etag = await self._get(snapshot_key(i))
            await self._put(snapshot_key(i), p.snapshot_after, IfMatch=etag)

        return self._each(result)

    def _each(self, fn: Callable[[int], Awaitable[object]]) -> Callable[[], Awaitable[object]]:
        return lambda: _each(self.n, self.concurrency, fn)


# -- running ---------------------------------------------------------------------------------------
async def _compare(
    report: Report,
    section: str,
    where: str,
    reps: int,
    fresh: Callable[[int], Awaitable[tuple[BackendSide, Any]]],
    n: int,
    note: str,
) -> None:
    times: dict[str, list[tuple[float, float]]] = {op: [] for op in OPS}
    requests: dict[str, list[float]] = {op: [] for op in OPS}
    wire: dict[str, list[float]] = {op: [] for op in OPS}
    for rep in range(reps):
        side, raw = await fresh(rep)
        for op in OPS:
            backend_phase, raw_phase = side.phase(op), raw.phase(op)
            side.counting.reset()
            if side.http is not None:
                side.http.clear()
            if rep % 2 == 0:
                b = await timed(backend_phase)
                r = await timed(raw_phase)
            else:
                r = await timed(raw_phase)
                b = await timed(backend_phase)
            times[op].append((b, r))
            requests[op].append(side.counting.total / n)
            if side.http is not None:
                wire[op].append(sum(side.http.values()) / n)
        await side.backend.close()
    for op in OPS:
        backend_rates = [n / b for b, _ in times[op]]
        raw_rates = [n / r for _, r in times[op]]
        ratios = [b / r for b, r in times[op]]
        req = f"{median(requests[op]):g}"
        if wire[op]:
            req += f" (HTTP {median(wire[op]):g})"
        report.add(
            Row(
                section,
                f"{where} {op}",
                f"{median(backend_rates):,.0f}/s",
                f"{median(raw_rates):,.0f}/s raw",
                f"{median(ratios):.2f}x",
                req,
                f"{note}; backend {spread(backend_rates)}, raw {spread(raw_rates)}",
            )
        )


async def local_ops(report: Report, *, n: int, reps: int, warmup_n: int = 20) -> None:
    """Figure 1: local disk, one operation at a time in one process."""
    base = Path(tempfile.mkdtemp(prefix="objstore-wfp-bench-ops-"))
    try:
        warm = BackendSide(LocalStore(base / "warmup"), warmup_n, 1)
        payloads = await warm.payloads()

        async def fresh(rep: int) -> tuple[BackendSide, Any]:
            return BackendSide(LocalStore(base / f"b{rep}"), n, 1), LocalRaw(base / f"r{rep}", n, payloads)

        await _compare(report, "1", "local", reps, fresh, n, f"n={n} sequential, median of {reps}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def s3_ops(report: Report, moto: Moto, *, n: int, reps: int, concurrency: int) -> None:
    """Figure 2: moto_server, ``concurrency`` operations in flight on both sides."""
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    from objstore_wfp.stores.s3 import S3Store

    bucket = moto.new_bucket()
    config = AioConfig(retries={"total_max_attempts": 1}, max_pool_connections=max(10, concurrency))
    async with get_session().create_client("s3", config=config, **moto.client_kwargs()) as client:

        def store(prefix: str) -> S3Store:
            options = moto.storage_options()
            options["config_kwargs"] = {"max_pool_connections": max(10, concurrency)}
            return S3Store(f"{bucket}/{prefix}", **options)

        warm = BackendSide(store("warmup"), 10, concurrency)
        payloads = await warm.payloads()
        await warm.backend.close()

        async def fresh(rep: int) -> tuple[BackendSide, Any]:
            side = BackendSide(store(f"b{rep}"), n, concurrency)
            side.http = await count_http(side.counting.inner)
            # Connections opened before timing, as the raw client's already are.
            await side.counting.get("warm")
            raw = S3Raw(client, bucket, f"r{rep}/", n, concurrency, payloads)
            await raw._put("warm", b"")
            return side, raw

        await _compare(
            report, "2", "moto", reps, fresh, n, f"n={n}, {concurrency} in flight, median of {reps}"
        )
