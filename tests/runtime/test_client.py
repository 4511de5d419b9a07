"""The client on InMemoryBackend: submit policies, status, results, cancellation."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from objstore_wfp import CannotCancelError, InMemoryBackend, InvalidIdentifierError, NotFoundError
from objstore_wfp.runtime import (
    Client,
    Flow,
    InstanceExistsError,
    RetryPolicy,
    Worker,
    WorkflowCancelledError,
    WorkflowFailedError,
)
from objstore_wfp.runtime.client import SUBMIT_LOCK, submit_lock_instance


def hello(name: str) -> str:
    return f"hello {name}"


def boom(x: object) -> None:
    raise RuntimeError("boom")


FLOW = Flow("greet").step(hello)


async def test_submit_policies_for_an_existing_id() -> None:
    backend = InMemoryBackend()
    client = Client(backend, [FLOW])
    assert await client.submit(FLOW, "ada", instance_id="g-1") == "g-1"
    with pytest.raises(InstanceExistsError):
        await client.submit(FLOW, "bob", instance_id="g-1")
    assert await client.submit(FLOW, "bob", instance_id="g-1", if_exists="return_existing") == "g-1"
    assert (await backend.load_snapshot("g-1")).initial_input == b'"ada"'
    await Worker(backend, [FLOW], poll_interval=0.01).run_until_idle()
    assert await client.result("g-1") == "hello ada"
    await client.submit(FLOW, "bob", instance_id="g-1", if_exists="replace")
    status = await client.status("g-1")
    assert status.state == "in_progress" and status.position == "task hello" and status.output is None
    await Worker(backend, [FLOW], poll_interval=0.01).run_until_idle()
    assert await client.result("g-1") == "hello bob"
    with pytest.raises(ValueError):
        await client.submit(FLOW, "x", instance_id="g-1", if_exists="maybe")  # type: ignore[arg-type]


async def test_concurrent_submits_of_one_id_create_it_exactly_once() -> None:
    backend = InMemoryBackend()
    clients = [Client(backend) for _ in range(6)]
    outcomes = await asyncio.gather(
        *(c.submit(FLOW, n, instance_id="same") for n, c in enumerate(clients)), return_exceptions=True
    )
    winners = [o for o in outcomes if o == "same"]
    assert len(winners) == 1
    assert all(isinstance(o, InstanceExistsError) for o in outcomes if o != "same")


async def test_the_submit_lock_outlives_a_delete_of_the_instance() -> None:
    # The lock is a claim of an instance of its own: deleting the instance being submitted (as
    # a replace or `objstore-wfp gc` does) removes that instance's claims, not the lock.
    backend = InMemoryBackend()
    long_id = "x" * 512  # the longest legal id: its lock instance id must be legal too
    for instance_id in ("order", long_id):
        await Client(backend, [FLOW]).submit(FLOW, "ada", instance_id=instance_id)
        lock = submit_lock_instance(instance_id)
        assert await backend.claim_task(lock, SUBMIT_LOCK, "submitter", timedelta(seconds=30))
        await backend.delete_snapshot(instance_id)
        assert await backend.claim_task(lock, SUBMIT_LOCK, "another", timedelta(seconds=30)) is None
        await backend.release_task_claim(lock, SUBMIT_LOCK, "submitter")
        assert await Client(backend, [FLOW]).submit(FLOW, "bob", instance_id=instance_id) == instance_id
    assert sorted(await backend.list_snapshots()) == sorted(["order", long_id])


async def test_default_ids_name_the_flow_and_illegal_ids_are_refused() -> None:
    client = Client(InMemoryBackend())
    instance_id = await client.submit(FLOW, "x")
    assert instance_id.startswith("greet-")
    with pytest.raises(InvalidIdentifierError):
        await client.submit(FLOW, "x", instance_id="a\x01b")
    with pytest.raises(NotFoundError):
        await client.status("missing")


async def test_result_reports_failure_cancellation_and_timeout() -> None:
    backend = InMemoryBackend()
    client = Client(backend)
    failing = Flow("fails").step(boom)
    failed = await client.submit(failing, None)
    await Worker(backend, [failing], poll_interval=0.01, retry=RetryPolicy(max_attempts=1)).run_until_idle()
    with pytest.raises(WorkflowFailedError, match="boom"):
        await client.result(failed)
    with pytest.raises(CannotCancelError):
        await client.cancel(failed)

    pending = await client.submit(FLOW, "x")
    with pytest.raises(TimeoutError):
        await client.result(pending, timeout=0.05, poll_interval=0.01)
    assert await client.cancel(pending, "no longer needed") is True
    assert await client.cancel(pending) is False
    with pytest.raises(WorkflowCancelledError, match="no longer needed"):
        await client.result(pending)
    status = await client.status(pending)
    assert status.state == "cancelled" and status.error == "no longer needed"
    assert await Worker(backend, [FLOW], poll_interval=0.01).run_until_idle() == 0
