"""``Worker.run_until_idle(wait_for_leases=True)``: a batch job finishes what a dead worker left."""

from __future__ import annotations

import secrets
import time
from datetime import timedelta

import pytest

from objstore_wfp import InMemoryBackend, ObjectStoreBackend
from objstore_wfp.runtime import Client, Flow, Worker

LEASE = timedelta(seconds=1.5)


def _inc(x: int) -> int:
    return x + 1


FLOW = Flow("wait-for-leases").step(_inc).step(_inc, name="again")
OTHER = Flow("someone-elses").step(_inc)


def _backend() -> ObjectStoreBackend:
    return ObjectStoreBackend.from_url(f"memory://leases-{secrets.token_hex(6)}")


async def _abandoned(backend: ObjectStoreBackend, flow: Flow, ttl: timedelta | None) -> str:
    """An instance whose first task a worker claimed and then died (never released)."""
    instance_id = await Client(backend, [flow]).submit(flow, 1)
    [task] = await backend.find_available_tasks("dead-worker", 1)
    assert await backend.claim_task(task.instance_id, task.task_id, "dead-worker", ttl) is not None
    return instance_id


async def test_default_returns_while_a_dead_workers_lease_is_live() -> None:
    backend = _backend()
    instance_id = await _abandoned(backend, FLOW, LEASE)
    started = time.monotonic()
    assert await Worker(backend, [FLOW], poll_interval=0.01).run_until_idle() == 0
    assert time.monotonic() - started < LEASE.total_seconds()
    assert (await Client(backend, [FLOW]).status(instance_id)).state == "in_progress"


async def test_waits_for_the_lease_then_finishes_the_workflow() -> None:
    backend = _backend()
    instance_id = await _abandoned(backend, FLOW, LEASE)
    worker = Worker(backend, [FLOW], poll_interval=0.05, lease=timedelta(seconds=10))
    started = time.monotonic()
    assert await worker.run_until_idle(wait_for_leases=True) == 2
    assert time.monotonic() - started >= LEASE.total_seconds() * 0.9
    assert await Client(backend, [FLOW]).result(instance_id, timeout=1) == 3
    assert worker.stats.takeovers == 1


async def test_does_not_wait_for_what_it_could_not_run() -> None:
    """Leases without a TTL never expire; a lease on a flow this worker does not know frees
    nothing it could run: neither is waited for."""
    backend = _backend()
    await _abandoned(backend, FLOW, None)
    await _abandoned(backend, OTHER, timedelta(seconds=60))
    started = time.monotonic()
    assert await Worker(backend, [FLOW], poll_interval=0.01).run_until_idle(wait_for_leases=True) == 0
    assert time.monotonic() - started < 5


async def test_needs_a_backend_that_lists_claims() -> None:
    with pytest.raises(TypeError, match="list_claims"):
        await Worker(InMemoryBackend(), [FLOW]).run_until_idle(wait_for_leases=True)
