"""Flow definitions, definition hashes and the position state machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from objstore_wfp import AtFork, AtTask, Completed, InProgress, WorkflowSnapshot
from objstore_wfp.runtime import Flow, FlowDefinitionError, JsonCodec, Registry, Step
from objstore_wfp.runtime.progress import advance


def prepare(x: int) -> int:
    return x + 1


def left(x: int) -> int:
    return x * 2


def right(x: int) -> int:
    return x * 3


def combine(outputs: dict[str, int]) -> int:
    return outputs["left"] + outputs["right"]


def finish(x: int) -> int:
    return -x


FLOW = Flow("shape").step(prepare).fork(left, right).join(combine).step(finish)


def test_builders_return_new_flows() -> None:
    base = Flow("f").step(prepare)
    longer = base.step(finish)
    assert base.task_names() == ["prepare"]
    assert longer.task_names() == ["prepare", "finish"]
    assert FLOW.task_names() == ["prepare", "left", "right", "combine", "finish"]
    assert FLOW.task("combine") == Step("combine", combine)
    assert FLOW.task("fork-1") is None


@pytest.mark.parametrize(
    "build",
    [
        lambda: Flow("f").step(prepare).step(prepare),
        lambda: Flow("f").step(prepare).fork(prepare, left).join(combine),
        lambda: Flow("f").step(lambda x: x),
        lambda: Flow("f").step(prepare, name="@submit"),
        lambda: Flow("f").step(prepare, name="bad\nname"),
        lambda: Flow(""),
        lambda: Flow("f").fork(),
        lambda: Flow("f").step(42),  # type: ignore[arg-type]
        lambda: Flow("f").step(left).fork(right, name="left").join(combine),
    ],
)
def test_malformed_flows_are_refused(build: object) -> None:
    with pytest.raises(FlowDefinitionError):
        build()  # type: ignore[operator]


def test_an_empty_flow_cannot_be_registered() -> None:
    with pytest.raises(FlowDefinitionError, match="no steps"):
        Registry([Flow("empty")])


def test_definition_hash_follows_names_and_shape_not_code() -> None:
    same = Flow("shape").step(Step("prepare", finish)).fork(left, right).join(combine).step(finish)
    assert same.definition_hash == FLOW.definition_hash
    assert FLOW.definition_hash.startswith("shape@")
    variants = [
        Flow("other").step(prepare).fork(left, right).join(combine).step(finish),
        Flow("shape").step(prepare).fork(right, left).join(combine).step(finish),
        Flow("shape").step(prepare).fork(left, right, name="f").join(combine).step(finish),
        Flow("shape").step(prepare).step(left).step(right).step(combine).step(finish),
    ]
    assert len({v.definition_hash for v in variants} | {FLOW.definition_hash}) == 5


def test_definition_hash_is_stable_across_processes() -> None:
    code = "from tests.runtime.test_flow import FLOW; print(FLOW.definition_hash)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
        env={**os.environ, "PYTHONHASHSEED": "123"},
    )
    assert out.stdout.strip() == FLOW.definition_hash


def test_registry_refuses_a_second_flow_with_the_same_shape() -> None:
    registry = Registry([FLOW])
    registry.add(FLOW)
    assert FLOW.definition_hash in registry and len(registry) == 1
    with pytest.raises(FlowDefinitionError, match="already registered"):
        registry.add(Flow("shape").step(prepare).fork(left, right).join(combine).step(finish))


def _record(snapshot: WorkflowSnapshot, task_id: str, value: object) -> None:
    """What a backend's save_task_result does to the next loaded snapshot."""
    assert isinstance(snapshot.state, InProgress)
    from objstore_wfp import TaskResult

    snapshot.state.completed_tasks[task_id] = TaskResult(task_id, JsonCodec().encode(value))


def test_advance_walks_steps_fork_and_join_from_recorded_results() -> None:
    codec = JsonCodec()
    snapshot = WorkflowSnapshot("i", FLOW.definition_hash, initial_input=b"1")
    assert advance(FLOW, snapshot, codec)
    assert snapshot.position == AtTask("prepare")
    assert not advance(FLOW, snapshot, codec)

    _record(snapshot, "prepare", 2)
    assert advance(FLOW, snapshot, codec)
    assert snapshot.position == AtFork("fork-1", ["left", "right"])
    assert snapshot.available_task_ids() == ["left", "right"]
    assert snapshot.task_input() == b"2"

    _record(snapshot, "right", 6)
    assert advance(FLOW, snapshot, codec)
    assert snapshot.position == AtFork("fork-1", ["left", "right"], ["right"])
    assert snapshot.task_input() == b"2", "a finished branch must not change the other branches' input"
    assert not advance(FLOW, snapshot, codec)

    _record(snapshot, "left", 4)
    assert advance(FLOW, snapshot, codec)
    assert snapshot.position == AtTask("combine")
    assert codec.decode(snapshot.task_input() or b"") == {"left": 4, "right": 6}

    _record(snapshot, "combine", 10)
    _record(snapshot, "finish", -10)
    assert advance(FLOW, snapshot, codec), "one call moves past every recorded task"
    assert snapshot.state == Completed(b"-10")


def test_advance_refuses_a_position_outside_the_flow() -> None:
    snapshot = WorkflowSnapshot("i", "x")
    snapshot.update_position(AtTask("nope"))
    _record(snapshot, "nope", 1)
    with pytest.raises(FlowDefinitionError):
        advance(FLOW, snapshot, JsonCodec())
