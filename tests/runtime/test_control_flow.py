"""Delays, signal waits, routes, loops and child flows: how flows are built, how positions move,
and how an in-process worker runs them over the in-memory backend and local disk."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from objstore_wfp import (
    AtDelay,
    AtSignal,
    AtTask,
    Cancelled,
    CannotPauseError,
    ConflictError,
    InMemoryBackend,
    NotFoundError,
    ObjectStoreBackend,
    PersistentBackend,
    WorkflowSnapshot,
)
from objstore_wfp.errors import InvalidIdentifierError
from objstore_wfp.model import TaskResult
from objstore_wfp.runtime import (
    Client,
    Flow,
    FlowDefinitionError,
    JsonCodec,
    Registry,
    RetryPolicy,
    Step,
    SyncClient,
    Worker,
    WorkflowFailedError,
)
from objstore_wfp.runtime.flow import Place
from objstore_wfp.runtime.progress import advance, describe_position

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
CODEC = JsonCodec()


def inc(x: int) -> int:
    return x + 1


def double(x: int) -> int:
    return 2 * x


def fail(x: Any) -> Any:
    raise RuntimeError("child broke")


def parity(x: int) -> str:
    return "even" if x % 2 == 0 else "odd"


def at_least_ten(x: int) -> bool:
    return x >= 10


def timed_out(x: Any) -> str:
    return f"no answer to {x}"


# -- building ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: Flow("f").step(inc, name="a~b"),
        lambda: Flow("f").delay(-1),
        lambda: Flow("f").delay("1s"),  # type: ignore[arg-type]
        lambda: Flow("f").wait_for_signal("ok", on_timeout=timed_out),
        lambda: Flow("f").wait_for_signal("bad\nname"),
        lambda: Flow("f").wait_for_signal("ok").wait_for_signal("ok"),
        lambda: Flow("f").loop(inc, until=at_least_ten, max_iterations=0),
        lambda: Flow("f").loop(inc, until=at_least_ten, max_iterations=3, on_max="retry"),  # type: ignore[arg-type]
        lambda: Flow("f").route(parity, {}),
        lambda: Flow("f").route(parity, {"even": inc, "odd": inc}),
        lambda: Flow("f").child(Flow("empty")),
    ],
)
def test_malformed_control_flow_is_refused(build: Any) -> None:
    with pytest.raises(FlowDefinitionError):
        build()


def test_task_ids_and_places() -> None:
    inner = Flow("inner").step(double)
    flow = (
        Flow("f")
        .step(inc)
        .delay(5)
        .wait_for_signal("ok", timeout=timedelta(hours=1), on_timeout=timed_out)
        .route(parity, {"even": Step("halve", double), "odd": inner}, default=Step("other", inc))
        .loop(Step("again", inc), until=at_least_ten, max_iterations=2)
        .child(inner, name="sub")
    )
    assert flow.task_names() == [
        "inc", "delay-1", "wait-ok", "halve", "inner", "inner~done", "other",
        "again~1", "again~2", "sub", "sub~done",
    ]  # fmt: skip
    assert flow.place("again~2") == Place(4, Step("again", inc), "again~2", 2)
    assert flow.place("sub~done") is not None and flow.place("sub~done").child_done  # type: ignore[union-attr]
    for unknown in ("again", "again~3", "again~02", "again~0", "inc~done", "route-1", "sub~1"):
        assert flow.place(unknown) is None, unknown
    assert flow.task("again~1") == Step("again", inc) and flow.task("delay-1") is None
    registry = Registry([flow])
    assert inner.definition_hash in registry
    assert registry.parent_of("order~sub", inner.definition_hash) == ("order", "sub~done")
    assert registry.parent_of("a~b~inner", inner.definition_hash) == ("a~b", "inner~done")
    assert registry.parent_of("order~sub", flow.definition_hash) is None
    assert registry.parent_of("order-sub", inner.definition_hash) is None


def test_durations_are_not_part_of_the_definition_hash_but_the_shape_is() -> None:
    base = Flow("f").delay(5).wait_for_signal("ok", timeout=1, on_timeout=timed_out)
    assert base.definition_hash == Flow("f").delay(60).wait_for_signal("ok", timeout=9).definition_hash
    assert base.definition_hash != Flow("f").delay(5).wait_for_signal("other").definition_hash
    assert base.definition_hash != Flow("f").delay(5, name="nap").wait_for_signal("ok").definition_hash


# -- positions -------------------------------------------------------------------------------------


def _snapshot(flow: Flow, value: Any) -> WorkflowSnapshot:
    snapshot = WorkflowSnapshot("i", flow.definition_hash, initial_input=CODEC.encode(value))
    advance(flow, snapshot, CODEC, NOW)
    return snapshot


def _record(flow: Flow, snapshot: WorkflowSnapshot, task_id: str, value: Any) -> None:
    """What a backend does when a task's result is recorded, then the worker's advance."""
    snapshot.completed_tasks[task_id] = TaskResult(task_id, CODEC.encode(value))
    advance(flow, snapshot, CODEC, NOW)


def test_delay_and_signal_positions_carry_their_times() -> None:
    flow = Flow("f").delay(30).wait_for_signal("ok", timeout=60).wait_for_signal("go", name="forever")
    snapshot = _snapshot(flow, 1)
    assert snapshot.position == AtDelay("delay-1", NOW + timedelta(seconds=30))
    _record(flow, snapshot, "delay-1", 1)
    assert snapshot.position == AtSignal("wait-ok", "ok", NOW + timedelta(seconds=60))
    assert describe_position(snapshot.position) == "wait-ok: signal ok (timeout 2026-01-01 00:01:00Z)"
    _record(flow, snapshot, "wait-ok", "yes")
    assert snapshot.position == AtSignal("forever", "go", None)
    _record(flow, snapshot, "forever", "done")
    assert snapshot.is_terminal and CODEC.decode(snapshot.state.final_output) == "done"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("value", "where", "failure"),
    [
        (4, "halve", None),
        (3, "other", None),
        ("x", None, "key raised TypeError"),
    ],
)
def test_a_route_takes_the_named_branch_or_the_default(
    value: Any, where: str | None, failure: str | None
) -> None:
    def pick(x: Any) -> str:
        return {0: "even"}.get(x % 2, "nope")

    flow = Flow("f").route(pick, {"even": Step("halve", double)}, default=Step("other", inc))
    snapshot = _snapshot(flow, value)
    if failure is not None:
        assert failure in snapshot.state.error  # type: ignore[union-attr]
        return
    assert snapshot.position == AtTask(where)  # type: ignore[arg-type]


def test_a_route_without_a_matching_branch_or_default_fails() -> None:
    flow = Flow("f").step(inc).route(parity, {"even": double})
    snapshot = _snapshot(flow, 2)
    _record(flow, snapshot, "inc", 3)
    assert "no branch for key 'odd' and no default" in snapshot.state.error  # type: ignore[union-attr]


@pytest.mark.parametrize(("on_max", "outcome"), [("fail", "failed"), ("exit", 3)])
def test_a_loop_runs_until_its_condition_or_its_bound(on_max: Any, outcome: Any) -> None:
    flow = Flow("f").loop(inc, until=at_least_ten, max_iterations=3, on_max=on_max)
    snapshot = _snapshot(flow, 0)
    for k in range(1, 4):
        assert snapshot.position == AtTask(f"inc~{k}")
        _record(flow, snapshot, f"inc~{k}", k)
    if outcome == "failed":
        assert "until did not hold after 3 iterations" in snapshot.state.error  # type: ignore[union-attr]
    else:
        assert CODEC.decode(snapshot.state.final_output) == outcome  # type: ignore[union-attr]


def test_a_child_step_starts_then_waits_for_the_child() -> None:
    flow = Flow("f").child(Flow("inner").step(double), name="sub").step(inc)
    snapshot = _snapshot(flow, 2)
    assert snapshot.position == AtTask("sub")
    _record(flow, snapshot, "sub", "i~sub")
    assert snapshot.position == AtSignal("sub~done", "sub~done", None)
    _record(flow, snapshot, "sub~done", 4)
    assert snapshot.position == AtTask("inc") and snapshot.task_input() == b"4"


# -- running -------------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "disk"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[PersistentBackend]:
    made: PersistentBackend = (
        InMemoryBackend() if request.param == "memory" else ObjectStoreBackend.from_url(str(tmp_path))
    )
    async with made:
        yield made


class Running:
    """A worker running in the background of a test."""

    def __init__(
        self, backend: PersistentBackend, flows: list[Flow], retry: RetryPolicy | None = None
    ) -> None:
        self.worker = Worker(backend, flows, poll_interval=0.02, max_poll_interval=0.05, retry=retry)
        self.task = asyncio.ensure_future(self.worker.run_forever(handle_signals=False))

    async def stop(self) -> None:
        self.worker.stop()
        await self.task


async def test_delay_signal_timeout_route_loop_and_child_run(backend: PersistentBackend) -> None:
    inner = Flow("inner").step(double).delay(0.05).step(inc)
    flows = [
        Flow("nap").delay(0.2).step(inc),
        Flow("ask").wait_for_signal("ok", timeout=0.3, on_timeout=timed_out).step(Step("echo", str)),
        Flow("route").route(parity, {"even": double}, default=inc),
        Flow("loop").loop(double, until=at_least_ten, max_iterations=8),
        Flow("parent").step(inc).child(inner, name="sub").step(Step("last", str)),
    ]
    nap, ask, route, loop, parent = flows
    client = Client(backend, flows)
    running = Running(backend, flows)
    try:
        started = asyncio.get_running_loop().time()
        napped = await client.submit(nap, 1)
        answered = await client.submit(ask, 1)
        ignored = await client.submit(ask, 2)
        await client.send_signal(answered, "ok", "yes")
        ids = {
            napped: 2,
            answered: "yes",
            ignored: "no answer to 2",
            await client.submit(route, 4): 8,
            await client.submit(route, 5): 6,
            await client.submit(loop, 3): 12,
            await client.submit(parent, 1, instance_id="p"): "5",
        }
        for instance_id, expected in ids.items():
            assert await client.result(instance_id, timeout=10) == expected, instance_id
        assert asyncio.get_running_loop().time() - started >= 0.2
        assert await client.result("p~sub", timeout=1) == 5
        assert await backend.load_task_result("p", "sub") == b'"p~sub"'
    finally:
        await running.stop()


async def test_a_wait_without_on_timeout_fails_and_a_failed_child_fails_its_parent(
    backend: PersistentBackend,
) -> None:
    broken = Flow("broken").step(Step("boom", fail))
    flows = [Flow("strict").wait_for_signal("ok", timeout=0.05), Flow("parent").child(broken).step(inc)]
    client = Client(backend, flows)
    running = Running(backend, flows, RetryPolicy(max_attempts=1))
    try:
        strict = await client.submit(flows[0])
        parent = await client.submit(flows[1], instance_id="pa")
        with pytest.raises(WorkflowFailedError, match="no signal 'ok' came within"):
            await client.result(strict, timeout=10)
        with pytest.raises(WorkflowFailedError, match=r"child flow 'pa~broken' failed: .*child broke"):
            await client.result(parent, timeout=10)
    finally:
        await running.stop()


async def test_cancelling_a_parent_cancels_its_children(backend: PersistentBackend) -> None:
    grandchild = Flow("leaf").wait_for_signal("never")
    flow = Flow("parent").child(Flow("middle").child(grandchild)).step(inc)
    client = Client(backend, [flow])
    await client.submit(flow, 1, instance_id="p")
    await Worker(backend, [flow], poll_interval=0.01).run_until_idle()
    assert isinstance((await backend.load_snapshot("p~middle~leaf")).position, AtSignal)
    assert await client.cancel("p", "stop", "ops") is True
    for instance_id in ("p", "p~middle", "p~middle~leaf"):
        state = (await backend.load_snapshot(instance_id)).state
        assert isinstance(state, Cancelled) and state.reason == "stop", (instance_id, state)


async def test_a_sweep_tells_a_parent_whose_child_ended_without_telling_it(
    backend: PersistentBackend,
) -> None:
    flow = Flow("parent").child(Flow("inner").delay(60)).step(inc)
    client = Client(backend, [flow])
    worker = Worker(backend, [flow], poll_interval=0.01)
    await client.submit(flow, 1, instance_id="p")
    await worker.run_until_idle()
    assert isinstance((await backend.load_snapshot("p~inner")).position, AtDelay)
    assert isinstance((await backend.load_snapshot("p")).position, AtSignal)
    await client.cancel("p~inner")  # a cancelled child tells nobody: the sweep finds it
    assert await worker.sweep() == 0
    with pytest.raises(WorkflowFailedError, match="child flow 'p~inner' was cancelled"):
        await client.result("p", timeout=1)


async def test_a_signal_is_taken_up_by_the_next_poll(backend: PersistentBackend) -> None:
    """What ``run_once`` (serverless) and ``run_until_idle`` (cron) rely on: one poll after a
    signal to a waiting instance finds its step (on an object store, the poll that absorbs the
    signal from the inbox offers the step too)."""
    flow = Flow("ask").wait_for_signal("ok").step(inc)
    client = Client(backend, [flow])
    instance_id = await client.submit(flow)
    await client.send_signal(instance_id, "ok", 41)
    assert await Worker(backend, [flow], poll_interval=0.01).run_once() == 2
    assert await client.result(instance_id, timeout=1) == 42


async def test_pause_unpause_and_signals_through_the_client(backend: PersistentBackend) -> None:
    flow = Flow("held").step(inc).wait_for_signal("go").step(double)
    client = Client(backend, [flow])
    instance_id = await client.submit(flow, 1)
    await client.pause(instance_id, "audit", "ops")
    await client.pause(instance_id, "again", "someone else")  # idempotent: the first request stays
    status = await client.status(instance_id)
    assert status.paused is not None and (status.paused.reason, status.paused.requested_by) == (
        "audit",
        "ops",
    )
    assert await Worker(backend, [flow], poll_interval=0.01).run_until_idle() == 0
    signal = await client.send_signal(instance_id, "go", 20)
    assert (signal.name, signal.payload, signal.instance_id) == ("go", b"20", instance_id)
    await client.unpause(instance_id)
    await client.unpause(instance_id)  # not paused: nothing happens
    assert (await client.status(instance_id)).paused is None
    running = Running(backend, [flow])
    try:
        assert await client.result(instance_id, timeout=10) == 40
    finally:
        await running.stop()
    with pytest.raises(CannotPauseError):
        await client.pause(instance_id)
    with pytest.raises(ConflictError):
        await client.send_signal(instance_id, "go", 1)
    with pytest.raises(NotFoundError):
        await client.send_signal("nobody", "go", 1)
    with pytest.raises(InvalidIdentifierError):
        await client.send_signal(instance_id, "", 1)


def test_the_sync_client_pauses_unpauses_and_signals() -> None:
    flow = Flow("sync").wait_for_signal("go").step(inc)
    backend = InMemoryBackend()
    client = SyncClient(backend, [flow])
    try:
        instance_id = client.submit(flow, 0)
        client.pause(instance_id, "wait")
        assert client.status(instance_id).paused is not None
        client.unpause(instance_id)
        assert client.send_signal(instance_id, "go", 41).seq >= 1
        assert client.status(instance_id).position == "wait-go: signal go (no timeout)"
    finally:
        client.close()


def test_the_approval_example_runs() -> None:
    """``python -m examples.approval``: one order approved by a signal, one timed out."""
    done = subprocess.run(
        [sys.executable, "-m", "examples.approval"],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "order-1: {'status': 'charged', 'approved_by': 'ana', 'released': True}" in done.stdout
    assert "order-2: {'status': 'rejected', 'rejected_by': 'timeout', 'released': True}" in done.stdout
