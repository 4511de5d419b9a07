"""The worker on InMemoryBackend: running, fork/join, retries, leases, cancellation, shutdown."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from objstore_wfp import (
    AtTask,
    Completed,
    Failed,
    InMemoryBackend,
    ManualClock,
    StoreUnavailableError,
    WorkflowSnapshot,
)
from objstore_wfp.runtime import Client, Flow, RetryPolicy, Worker, WorkerEvent
from objstore_wfp.runtime.flow import Step

FAST = RetryPolicy(max_attempts=3, initial_backoff=0.01, multiplier=1.0)


def make_worker(backend: InMemoryBackend, flows: list[Flow], **kwargs: Any) -> Worker:
    kwargs.setdefault("poll_interval", 0.01)
    kwargs.setdefault("retry", FAST)
    return Worker(backend, flows, **kwargs)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (bounded) until ``condition()`` holds."""
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


def incr(x: int) -> int:
    return x + 1


async def a_double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


def total(outputs: dict[str, int]) -> dict[str, Any]:
    return {"sum": sum(outputs.values()), "order": list(outputs)}


def square(x: int) -> int:
    return x * x


FORK_FLOW = (
    Flow("forky")
    .step(incr)
    .fork(a_double, square, Step("neg", lambda x: -x))
    .join(total)
    .step(Step("wrap", lambda r: {"result": r}))
)


async def test_sequential_and_fork_join_flows_complete_with_the_right_outputs() -> None:
    backend = InMemoryBackend()
    client = Client(backend, [FORK_FLOW])
    ids = [await client.submit(FORK_FLOW, n) for n in range(5)]
    worker = make_worker(backend, [FORK_FLOW])
    assert await worker.run_until_idle() == 5 * 6
    for n, instance_id in enumerate(ids):
        m = n + 1
        expected = {"result": {"sum": 2 * m + m * m - m, "order": ["a_double", "square", "neg"]}}
        assert await client.result(instance_id, timeout=1) == expected
        status = await client.status(instance_id)
        assert status.state == "completed" and status.flow == "forky"
    assert worker.stats.executions == worker.stats.recorded == 30
    assert worker.stats.duplicates == worker.stats.lost == worker.stats.takeovers == 0


async def test_fork_branches_run_in_parallel_on_different_workers() -> None:
    both_running = threading.Barrier(2, timeout=5)

    def branch(x: int) -> int:
        both_running.wait()  # only returns once the other branch runs at the same time
        return x

    flow = Flow("par").fork(Step("a", branch), Step("b", branch)).join(total)
    backend = InMemoryBackend()
    instance_id = await Client(backend).submit(flow, 1)
    events: list[WorkerEvent] = []
    workers = [make_worker(backend, [flow], concurrency=1, on_event=events.append) for _ in range(2)]
    await asyncio.gather(*(w.run_until_idle() for w in workers))
    assert await Client(backend).result(instance_id, timeout=1) == {"sum": 2, "order": ["a", "b"]}
    runners = {e.task_id: e.worker_id for e in events if e.kind == "started"}
    assert runners["a"] != runners["b"]


async def test_unknown_flows_are_left_alone() -> None:
    backend = InMemoryBackend()
    other = Flow("other").step(incr)
    instance_id = await Client(backend).submit(other, 1)
    known = [await Client(backend).submit(FORK_FLOW, 1) for _ in range(2)]
    worker = make_worker(backend, [FORK_FLOW])
    await worker.run_until_idle()
    assert (await backend.load_snapshot(instance_id)).position == AtTask("incr")
    assert [t.task_id for t in await backend.find_available_tasks("probe", 10)] == ["incr"]
    for kid in known:
        assert (await backend.load_snapshot(kid)).is_terminal


async def test_a_failing_task_is_retried_with_backoff_then_succeeds() -> None:
    calls: list[int] = []

    def flaky(x: int) -> int:
        calls.append(x)
        if len(calls) < 3:
            raise RuntimeError("transient")
        return x

    flow = Flow("flaky").step(flaky)
    backend = InMemoryBackend()
    instance_id = await Client(backend).submit(flow, 7)
    events: list[WorkerEvent] = []
    worker = make_worker(backend, [flow], on_event=events.append)
    assert await worker.run_until_idle() == 1
    assert await Client(backend).result(instance_id) == 7
    assert [e.attempt for e in events if e.kind == "retrying"] == [1, 2]
    assert worker.stats.retries == 2 and worker.stats.executions == 3


async def test_a_task_failing_every_attempt_fails_the_workflow() -> None:
    def broken(x: int) -> int:
        raise ValueError(f"bad input {x}")

    def not_json(x: int) -> object:
        return object()

    backend = InMemoryBackend()
    client = Client(backend)
    first = await client.submit(Flow("broken").step(broken), 1)
    second = await client.submit(Flow("opaque").step(not_json), 1)
    worker = make_worker(backend, [Flow("broken").step(broken), Flow("opaque").step(not_json)])
    assert await worker.run_until_idle() == 0
    state = (await backend.load_snapshot(first)).state
    assert isinstance(state, Failed)
    assert "after 3 attempt(s)" in state.error and "ValueError: bad input 1" in state.error
    state = (await backend.load_snapshot(second)).state
    assert isinstance(state, Failed) and "not JSON-serializable" in state.error
    assert worker.stats.failed == 2
    assert await backend.find_available_tasks("probe", 10) == []


async def test_a_worker_whose_lease_expired_is_taken_over_and_never_records() -> None:
    clock = ManualClock()
    backend = InMemoryBackend(clock=clock)
    release_slow = threading.Event()
    started = threading.Event()
    runs: list[str] = []

    def step(x: int) -> str:
        run = f"run-{len(runs) + 1}"
        runs.append(run)
        if run == "run-1":
            started.set()
            release_slow.wait(5)
        return run

    flow = Flow("lease").step(step)
    instance_id = await Client(backend).submit(flow, 0)
    events: list[WorkerEvent] = []
    lease = timedelta(seconds=30)
    slow = make_worker(backend, [flow], lease=lease, heartbeat=timedelta(seconds=0.2), on_event=events.append)
    rescuer = make_worker(backend, [flow], lease=lease, on_event=events.append)
    slow_run = asyncio.ensure_future(slow.run_once())
    assert await asyncio.to_thread(started.wait, 5)
    clock.advance(lease)  # the slow worker's lease expires (its heartbeat has not renewed it yet)
    assert await rescuer.run_once() == 1
    # The slow worker's next heartbeat finds the takeover and abandons the still-running function.
    await until(lambda: slow.stats.lost > 0)
    release_slow.set()
    assert await slow_run == 0
    assert await Client(backend).result(instance_id) == "run-2"
    kinds = [(e.worker_id == slow.worker_id, e.kind, e.token) for e in events if e.kind != "started"]
    assert (False, "claimed", 2) in kinds and (False, "recorded", 2) in kinds
    assert (True, "lost", 1) in kinds
    assert (True, "recorded", 1) not in kinds
    assert rescuer.stats.takeovers == 1


async def test_a_result_recorded_first_by_someone_else_wins() -> None:
    backend = InMemoryBackend()
    gate = threading.Event()

    def step(x: int) -> str:
        gate.wait(5)
        return "mine"

    flow = Flow("first-wins").step(step).step(Step("echo", lambda x: x))
    instance_id = await Client(backend).submit(flow, 0)
    events: list[WorkerEvent] = []
    worker = make_worker(backend, [flow], on_event=events.append)
    run = asyncio.ensure_future(worker.run_until_idle())
    await until(lambda: any(e.kind == "started" for e in events))
    await backend.save_task_result(instance_id, "step", b'"theirs"')
    gate.set()
    await run
    assert await Client(backend).result(instance_id) == "theirs"
    assert worker.stats.duplicates == 1


async def test_concurrency_limit_is_respected() -> None:
    running = 0
    peak = 0

    async def slow(x: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1
        return x

    flow = Flow("limited").step(slow)
    backend = InMemoryBackend()
    for n in range(8):
        await Client(backend).submit(flow, n)
    worker = make_worker(backend, [flow], concurrency=3)
    assert await worker.run_until_idle() == 8
    assert peak == 3


async def test_cancel_request_is_applied_at_the_next_heartbeat_and_stops_the_task() -> None:
    backend = InMemoryBackend()
    started = asyncio.Event()

    async def forever(x: int) -> int:
        started.set()
        await asyncio.sleep(30)
        return x

    flow = Flow("cancel-me").step(forever).step(incr)
    instance_id = await Client(backend).submit(flow, 1)
    events: list[WorkerEvent] = []
    worker = make_worker(
        backend, [flow], lease=timedelta(seconds=3), heartbeat=timedelta(seconds=0.05), on_event=events.append
    )
    run = asyncio.ensure_future(worker.run_until_idle())
    await asyncio.wait_for(started.wait(), 5)
    await backend.request_cancellation(instance_id, "changed my mind", "test")
    assert await asyncio.wait_for(run, 5) == 0
    snapshot = await backend.load_snapshot(instance_id)
    assert snapshot.state.__class__.__name__ == "Cancelled"
    assert snapshot.state.interrupted_at_task == "forever"  # type: ignore[union-attr]
    assert [e.kind for e in events][-1] == "cancelled"
    # The claim was released: nothing is held any more.
    assert await backend.claim_task(instance_id, "forever", "probe", None) is not None


async def test_stop_lets_in_flight_tasks_finish_and_a_second_stop_abandons_them() -> None:
    backend = InMemoryBackend()
    gate = asyncio.Event()

    async def waits(x: int) -> int:
        await gate.wait()
        return x

    flow = Flow("graceful").step(waits)
    first = await Client(backend).submit(flow, 1)
    worker = make_worker(backend, [flow])
    run = asyncio.ensure_future(worker.run_forever(handle_signals=False))
    await until(lambda: worker.stats.executions > 0)
    worker.stop()
    await asyncio.sleep(0.05)
    assert not run.done(), "the in-flight task is allowed to finish"
    gate.set()
    assert await asyncio.wait_for(run, 5) == 1
    assert await Client(backend).result(first) == 1

    gate.clear()
    second = await Client(backend).submit(flow, 2)
    events: list[WorkerEvent] = []
    worker = make_worker(backend, [flow], on_event=events.append)
    run = asyncio.ensure_future(worker.run_forever(handle_signals=False))
    await until(lambda: worker.stats.executions > 0)
    worker.stop()
    worker.stop()
    assert await asyncio.wait_for(run, 5) == 0
    assert events[-1].kind == "released"
    claim = await backend.claim_task(second, "waits", "other", timedelta(seconds=5))
    assert claim is not None and claim.token == 2


async def test_sweep_advances_a_workflow_whose_worker_died_after_recording() -> None:
    flow = Flow("crashy").step(incr).step(Step("twice", lambda x: 2 * x))
    backend = InMemoryBackend()
    instance_id = await Client(backend).submit(flow, 1)
    # A worker recorded "incr" and died before advancing: nothing is offered any more.
    await backend.save_task_result(instance_id, "incr", b"2")
    assert await backend.find_available_tasks("probe", 10) == []
    worker = make_worker(backend, [flow])
    assert await worker.run_until_idle() == 1
    assert await Client(backend).result(instance_id) == 4


async def test_run_once_loop_completes_workflows() -> None:
    backend = InMemoryBackend()
    ids = [await Client(backend).submit(FORK_FLOW, n) for n in range(3)]
    for _ in range(50):
        if all([(await backend.load_snapshot(i)).is_terminal for i in ids]):
            break
        await make_worker(backend, [FORK_FLOW], concurrency=2).run_once()
    assert [(await backend.load_snapshot(i)).state.__class__ for i in ids] == [Completed] * 3


async def test_worker_arguments_are_checked() -> None:
    backend = InMemoryBackend()
    with pytest.raises(ValueError):
        Worker(backend, [FORK_FLOW], concurrency=0)
    with pytest.raises(ValueError):
        Worker(backend, [FORK_FLOW], lease=timedelta(seconds=3), heartbeat=timedelta(seconds=3))
    with pytest.raises(ValueError):
        Worker(backend, [])
    with pytest.raises(ValueError):
        Worker(backend, [FORK_FLOW], worker_id="bad\x00id")


async def test_a_snapshot_submitted_without_position_is_started_by_sweep() -> None:
    flow = Flow("bare").step(incr)
    backend = InMemoryBackend()
    await backend.save_snapshot(WorkflowSnapshot("bare-1", flow.definition_hash, initial_input=b"41"))
    assert await make_worker(backend, [flow]).run_until_idle() == 1
    assert await Client(backend).result("bare-1") == 42


async def test_a_worker_that_learns_of_the_takeover_only_when_recording_records_nothing() -> None:
    clock = ManualClock()
    backend = InMemoryBackend(clock=clock)
    gate = threading.Event()
    started = threading.Event()
    runs: list[str] = []

    def step(x: int) -> str:
        run = f"run-{len(runs) + 1}"
        runs.append(run)
        if run == "run-1":
            started.set()
            gate.wait(5)
        return run

    flow = Flow("late").step(step)
    instance_id = await Client(backend).submit(flow, 0)
    lease = timedelta(seconds=30)
    # A heartbeat far beyond the test: the slow worker never renews, it only finds out at recording.
    slow = make_worker(backend, [flow], lease=lease, heartbeat=timedelta(seconds=29))
    slow_run = asyncio.ensure_future(slow.run_once())
    assert await asyncio.to_thread(started.wait, 5)
    clock.advance(lease)
    assert await make_worker(backend, [flow], lease=lease).run_once() == 1
    gate.set()
    assert await slow_run == 0
    assert slow.stats.lost == 1 and slow.stats.recorded == 0
    assert await Client(backend).result(instance_id) == "run-2"


class FlakyRenewals(InMemoryBackend):
    """Renewing a lease fails with a store error every other time."""

    calls = 0

    async def extend_task_claim(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls % 2:
            raise StoreUnavailableError("store hiccup")
        return await super().extend_task_claim(*args, **kwargs)


async def test_a_failed_renewal_is_retried_and_the_task_completes() -> None:
    backend = FlakyRenewals()

    async def slowish(x: int) -> int:
        await asyncio.sleep(0.3)
        return x

    flow = Flow("flaky-store").step(slowish)
    instance_id = await Client(backend).submit(flow, 5)
    worker = make_worker(backend, [flow], lease=timedelta(seconds=2), heartbeat=timedelta(seconds=0.05))
    assert await worker.run_until_idle() == 1
    assert backend.calls >= 2 and worker.stats.lost == 0
    assert await Client(backend).result(instance_id) == 5


class StaleFind(InMemoryBackend):
    """Answers the next find with a list captured earlier, as a slow reader would see it."""

    stale: list[Any] | None = None

    async def find_available_tasks(self, worker_id: str, limit: int) -> list[Any]:
        if self.stale is not None:
            stale, self.stale = self.stale, None
            return stale
        return await super().find_available_tasks(worker_id, limit)


async def test_a_task_done_after_a_stale_find_is_not_run_again() -> None:
    backend = StaleFind()
    calls: list[int] = []

    def once(x: int) -> int:
        calls.append(x)
        return x

    flow = Flow("stale").step(once)
    instance_id = await Client(backend).submit(flow, 3)
    seen_early = await backend.find_available_tasks("late", 10)
    # Runs and records; the finished task's claim is not released but lapses with its lease.
    assert await make_worker(backend, [flow], lease=timedelta(milliseconds=50)).run_once() == 1
    await asyncio.sleep(0.1)
    backend.stale = seen_early
    events: list[WorkerEvent] = []
    late = make_worker(backend, [flow], on_event=events.append)
    assert await late.run_once() == 0
    assert calls == [3] and late.stats.executions == 0
    assert [(e.kind, e.token, e.detail) for e in events] == [("released", 2, "already recorded")]
    assert late.stats.claimed == late.stats.takeovers == 0
    assert await Client(backend).result(instance_id) == 3
