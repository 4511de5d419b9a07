"""One backend object shared by many event loops and threads (issue 14), on real servers.

A backend made once (at import time, as serverless handlers and web apps do) is used from one
``asyncio.run`` after another and from several threads, each running its own loop. Every call
must succeed, nothing may stay bound to a loop that is gone, and nothing may leak: the tests
count open file descriptors (``/proc/self/fd``), resident memory and the bytes that
``tracemalloc`` still sees allocated, and turn every warning, every "Unclosed ..." log and every
error-level log into a failure.

The leak bounds are far below what one leaked client per call would cost (an aiohttp session
holds a socket; an aiobotocore client weighs hundreds of kilobytes) and far above what the
measured runs vary by: see the figures each test prints (run with ``-s``).
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest

from objstore_wfp import AtTask, ObjectStoreBackend, WorkflowSnapshot
from objstore_wfp.runtime import Flow, Worker
from tests.leaks import Usage, no_complaints, open_sessions

#: Measured (2026-11-30, 1,000 calls): fds +0 on every store; RSS up to +17 MiB on moto
#: (botocore makes a client per loop; the allocator keeps some), +0 on Azurite and
#: fake-gcs-server; traced within +-4 KB over 200 calls once caches are warm (+0.2 MiB while
#: they fill). The code before this test leaked a client and its session per call: about
#: 0.8 MB of RSS and one unclosed session each, hundreds of MB over 1,000 calls.
FD_SLACK = 4
RSS_SLACK = 64 * 2**20
TRACED_SLACK = 2**20


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    options: dict[str, Any]

    def backend(self) -> ObjectStoreBackend:
        return ObjectStoreBackend.from_url(self.url, **self.options)


@pytest.fixture(params=["moto", "azurite", "fake-gcs"])
def target(request: pytest.FixtureRequest) -> Target:
    """A fresh root on each cloud store's test server."""
    root = secrets.token_hex(6)
    if request.param == "moto":
        endpoint = request.getfixturevalue("moto_s3")
        bucket = endpoint.create_bucket("loops")
        return Target("moto", f"s3://{bucket}/{root}", endpoint.storage_options())
    if request.param == "azurite":
        azurite = request.getfixturevalue("azurite")
        container = azurite.create_container("loops")
        return Target("azurite", f"az://{container}/{root}", azurite.storage_options())
    gcs = request.getfixturevalue("fake_gcs")
    return Target("fake-gcs", f"gs://{gcs.create_bucket('loops')}/{root}", gcs.storage_options())


def _seeded(target: Target) -> tuple[ObjectStoreBackend, Callable[[], Any]]:
    """The module-level backend, with one instance ready, and one call's work (3 requests)."""
    backend = target.backend()

    async def seed() -> None:
        snapshot = WorkflowSnapshot("order/1", "flow-v1", initial_input=b"in")
        snapshot.update_position(AtTask("charge"))
        await backend.save_snapshot(snapshot)

    asyncio.run(seed())

    async def call() -> None:
        snapshot = await backend.load_snapshot("order/1")
        assert snapshot.definition_hash == "flow-v1"
        [task] = await backend.find_available_tasks("w", 5)
        assert task.task_id == "charge"

    return backend, call


def _run_in_threads(threads: int, calls: int, call: Callable[[], Any]) -> list[str]:
    failures: list[str] = []

    def work() -> None:
        for _ in range(calls):
            try:
                asyncio.run(call())
            except Exception as exc:
                failures.append(repr(exc))

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return failures


def test_one_backend_from_three_threads(target: Target) -> None:
    """The issue's report: a backend made at import time, used from 3 threads each running its own
    ``asyncio.run``, failed most calls with "bound to a different event loop" and logged an
    unclosed session per call."""
    _, call = _seeded(target)
    with no_complaints():
        assert _run_in_threads(3, 5, call) == []


@pytest.mark.timeout(1800)
def test_a_thousand_successive_asyncio_runs(target: Target) -> None:
    backend, call = _seeded(target)
    with no_complaints():
        for _ in range(50):  # warm-up: imports, caches, the allocator's arenas
            asyncio.run(call())
        before = Usage.now()
        for _ in range(600):
            asyncio.run(call())
        # tracemalloc slows every allocation down several times: it watches the last 200 calls,
        # after 200 more that let the bounded caches (botocore's LRUs) refill with traced entries.
        tracemalloc.start()
        try:
            for _ in range(200):
                asyncio.run(call())
            traced = Usage.now()
            for _ in range(200):
                asyncio.run(call())
            after = Usage.now()
        finally:
            tracemalloc.stop()
        asyncio.run(backend.close())
    # fds and RSS over all 1,000 calls, traced bytes over the last 200.
    growth = replace(after.growth_since(before), traced=after.traced - traced.traced)
    print(f"\n{target.name}: 1,000 x asyncio.run: {growth}")
    assert growth.fds <= FD_SLACK
    assert growth.rss <= RSS_SLACK
    assert growth.traced <= TRACED_SLACK


@pytest.mark.timeout(1800)
def test_eight_threads_each_running_its_own_loops(target: Target) -> None:
    backend, call = _seeded(target)
    with no_complaints():
        assert _run_in_threads(8, 10, call) == []  # warm-up
        before = Usage.now()
        failures = _run_in_threads(8, 200, call)
        growth = Usage.now().growth_since(before)
        asyncio.run(backend.close())
    print(f"\n{target.name}: 8 threads x 200 asyncio.run: {growth}")
    assert failures == []
    assert growth.fds <= FD_SLACK
    assert growth.rss <= RSS_SLACK


def test_backend_used_by_several_loops_at_once_closes_them_all(target: Target) -> None:
    """``close()`` from one loop closes the clients that other, still running loops made, on
    their own loops; every loop can go on using the backend afterwards (with a new client)."""
    backend, call = _seeded(target)
    started = threading.Barrier(3)
    closed = threading.Event()
    failures: list[str] = []

    async def busy() -> None:
        await call()
        await asyncio.to_thread(started.wait, 30)
        await asyncio.to_thread(closed.wait, 30)
        await call()

    def thread() -> None:
        try:
            asyncio.run(busy())
        except Exception as exc:
            failures.append(repr(exc))

    with no_complaints():
        others = [threading.Thread(target=thread) for _ in range(2)]
        for other in others:
            other.start()
        started.wait(30)
        assert open_sessions() >= 2

        async def close_all() -> None:
            await call()
            await backend.close()

        asyncio.run(close_all())
        assert open_sessions() == 0  # the other loops' sessions too, not only ours
        closed.set()
        for other in others:
            other.join()
    assert failures == []


def test_run_once_in_successive_asyncio_runs_logs_nothing(moto_s3: Any) -> None:
    """The issue's second report: 50 ``asyncio.run(worker.run_once())`` on S3 each logged an
    "Unclosed client session"."""
    bucket = moto_s3.create_bucket("loops")
    backend = ObjectStoreBackend.from_url(f"s3://{bucket}/w", **moto_s3.storage_options())
    flow = Flow("loops").step(lambda x: x + 1, name="inc")
    worker = Worker(backend, [flow], lease=timedelta(seconds=30), poll_interval=0.01)

    async def submit() -> None:
        from objstore_wfp.runtime import Client

        for i in range(10):
            await Client(backend, [flow]).submit(flow, i, instance_id=f"i{i}")

    with no_complaints():
        asyncio.run(submit())
        completed = sum(asyncio.run(worker.run_once()) for _ in range(50))
        asyncio.run(backend.close())
    assert completed == 10
