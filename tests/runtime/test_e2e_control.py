"""End to end over worker processes: delays, signals, pause, routing, loops and child flows.

Every test runs on local disk and on S3 (moto_server), like ``test_e2e.py`` whose fixtures it
uses. Workers poll every 0.1 s and back off to at most ``MAX_POLL`` while idle.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest

from objstore_wfp import AtDelay, AtSignal, ObjectStoreBackend
from objstore_wfp.runtime import Client
from tests.runtime import test_e2e
from tests.runtime.e2e_control_flows import (
    DELAY,
    FLOWS,
    LOOP,
    NAP,
    PARENT,
    PAUSE,
    QUICK,
    ROUTE,
    SIGNAL,
)
from tests.runtime.test_e2e import Workers, eventually

pytestmark = pytest.mark.slow

# The fixtures of test_e2e.py: each test runs on local disk and on moto_server.
local_store_target = test_e2e.local_store_target
moto_e2e_target = test_e2e.moto_e2e_target
target = test_e2e.target
workers = test_e2e.workers
backend = test_e2e.backend

SPEC = "tests.runtime.e2e_control_flows:FLOWS"
MAX_POLL = 0.3
#: What a busy 2-core machine adds to a wake-up beyond the poll interval (process scheduling,
#: the poll's own requests on moto_server).
SLACK = 1.0


async def start(workers: Workers, *names: str) -> list[Any]:
    """Start a worker process per name and wait until each polls: its SIGTERM handler is in
    place from then on, so stopping it is a graceful exit."""
    processes = [
        workers.start(name, "--flow", SPEC, "--max-poll", str(MAX_POLL), "--lease", "5") for name in names
    ]
    for name in names:

        async def ready(name: str = name) -> bool:
            return any(e["kind"] == "ready" for e in workers.events(name))

        await eventually(ready, 60, f"worker {name} to start")
    return processes


def when(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["at"])


def recorded(workers: Workers, names: list[str], instance_id: str, task_id: str) -> list[dict[str, Any]]:
    return [
        e
        for name in names
        for e in workers.events(name)
        if e["kind"] == "recorded" and e["instance_id"] == instance_id and e["task_id"] == task_id
    ]


async def position(backend: ObjectStoreBackend, instance_id: str) -> Any:
    return (await backend.load_snapshot(instance_id)).position


async def test_a_delay_wakes_on_time_within_one_poll_interval(
    backend: ObjectStoreBackend, workers: Workers
) -> None:
    [process] = await start(workers, "w")
    client = Client(backend, FLOWS)
    instance_id = await client.submit(DELAY, 1, instance_id="nap")

    async def sleeping() -> Any:
        found = await position(backend, instance_id)
        return found if isinstance(found, AtDelay) else None

    nap = await eventually(sleeping, 30, "the workflow to reach its delay")
    assert await client.result(instance_id, timeout=30) == {"got": 2}
    [woke] = recorded(workers, ["w"], instance_id, nap.step_id)
    [claimed] = [e for e in workers.events("w") if e["kind"] == "claimed" and e["task_id"] == nap.step_id]
    late = (when(claimed) - nap.wake_at).total_seconds()
    asleep = (nap.wake_at - when(recorded(workers, ["w"], instance_id, "bump")[0])).total_seconds()
    print(f"delay of {NAP}s: slept {asleep:.2f}s before the wake time, taken up {late:.3f}s after it")
    assert late >= 0, "never before its wake time"
    assert late <= MAX_POLL + SLACK
    assert woke["detail"] == "delay"
    assert workers.stop(process) == 0


async def test_a_signal_sent_before_during_and_after_the_wait_is_delivered_once(
    backend: ObjectStoreBackend, workers: Workers
) -> None:
    names = ["w1", "w2"]
    processes = await start(workers, *names)
    client = Client(backend, FLOWS)
    # Before: sent while the first step still runs, kept until the wait.
    early = await client.submit(SIGNAL, "a", instance_id="early")
    await client.send_signal(early, "go", "early bird")
    # During: sent while the workflow waits.
    waiting = await client.submit(SIGNAL, "b", instance_id="waiting")

    async def at_wait() -> bool:
        return isinstance(await position(backend, waiting), AtSignal)

    await eventually(at_wait, 30, "the workflow to wait for its signal")
    await client.send_signal(waiting, "go", "on time")
    # After: the wait took the first signal; a second one is kept, not delivered.

    async def lingering() -> bool:
        return isinstance(await position(backend, waiting), AtDelay)

    await eventually(lingering, 30, "the wait to take the signal")
    late = await client.send_signal(waiting, "go", "too late")
    assert await client.result(early, timeout=30) == {"got": "early bird"}
    assert await client.result(waiting, timeout=30) == {"got": "on time"}
    for instance_id in (early, waiting):
        [taken] = recorded(workers, names, instance_id, "wait-go")
        assert taken["detail"] == "signal"
    assert await backend.list_signals(early) == []
    # A finished instance takes no signal; the late one stays buffered until it is deleted.
    assert [s.seq for s in await backend.list_signals(waiting)] == [late.seq]
    assert [workers.stop(p) for p in processes] == [0, 0]


async def test_a_signal_wait_times_out_to_its_timeout_path(
    backend: ObjectStoreBackend, workers: Workers
) -> None:
    [process] = await start(workers, "w")
    client = Client(backend, FLOWS)
    instance_id = await client.submit(QUICK, "c", instance_id="silent")
    assert await client.result(instance_id, timeout=30) == {"got": "timed out"}
    [taken] = recorded(workers, ["w"], instance_id, "wait-go")
    assert taken["detail"] == "timeout"
    assert workers.stop(process) == 0


async def test_a_pause_holds_across_a_worker_restart(backend: ObjectStoreBackend, workers: Workers) -> None:
    client = Client(backend, FLOWS)
    instance_id = await client.submit(PAUSE, 1, instance_id="paused")
    await client.pause(instance_id, "hold on", "e2e")
    [first] = await start(workers, "first")
    await asyncio.sleep(1.5)
    assert workers.stop(first) == 0
    [second] = await start(workers, "second")
    await asyncio.sleep(1.5)
    status = await client.status(instance_id)
    assert status.state == "in_progress" and status.position == "task slow"
    assert status.paused is not None and status.paused.requested_by == "e2e"
    assert not [e for n in ("first", "second") for e in workers.events(n) if e["kind"] == "claimed"]
    await client.unpause(instance_id)
    assert await client.result(instance_id, timeout=30) == {"got": 2}
    assert workers.stop(second) == 0


async def test_a_task_running_when_paused_is_recorded_and_the_next_one_waits(
    backend: ObjectStoreBackend, workers: Workers
) -> None:
    client = Client(backend, FLOWS)
    [first] = await start(workers, "first")
    instance_id = await client.submit(PAUSE, 1, instance_id="paused-running")

    async def running() -> bool:
        return any(e["kind"] == "started" and e["task_id"] == "slow" for e in workers.events("first"))

    await eventually(running, 30, "the first task to start")
    await client.pause(instance_id, "hold on", "e2e")
    await eventually(lambda: _recorded_task(backend, instance_id, "slow"), 30, "the running task to finish")
    await asyncio.sleep(1.0)
    status = await client.status(instance_id)
    assert status.state == "in_progress" and status.position == "task bump"
    await client.unpause(instance_id)
    assert await client.result(instance_id, timeout=30) == {"got": 2}
    assert workers.stop(first) == 0


async def _recorded_task(backend: ObjectStoreBackend, instance_id: str, task_id: str) -> bool:
    return await backend.load_task_result(instance_id, task_id) is not None


async def test_routing_loops_and_child_flows_work(backend: ObjectStoreBackend, workers: Workers) -> None:
    processes = await start(workers, "w1", "w2")
    client = Client(backend, FLOWS)
    routed = {
        await client.submit(ROUTE, {"kind": k, "n": n}, instance_id=f"route-{k}"): expected
        for k, n, expected in (("small", 1, "small 1"), ("large", 2, "large 2"), ("odd", 3, "other 3"))
    }
    looped = await client.submit(LOOP, 1, instance_id="loop")
    parent = await client.submit(PARENT, 1, instance_id="parent")
    for instance_id, expected in routed.items():
        assert await client.result(instance_id, timeout=30) == expected
    assert await client.result(looped, timeout=30) == {"got": 5}
    assert await client.result(parent, timeout=30) == {"got": 7}  # (1 + 1) * 3 + 1
    loop_ids = [await backend.load_task_result(looped, f"bump~{k}") for k in range(1, 6)]
    assert loop_ids == [b"2", b"3", b"4", b"5", None]
    assert await Client(backend, FLOWS).result("parent~inner", timeout=5) == 7
    assert [workers.stop(p) for p in processes] == [0, 0]
