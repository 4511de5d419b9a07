"""The data model's helpers and invariants."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest

from objstore_wfp import (
    AtFork,
    AtJoin,
    AtTask,
    CancellationRequest,
    Cancelled,
    Completed,
    ConflictError,
    Failed,
    InProgress,
    ManualClock,
    NotStarted,
    TaskClaim,
    TaskResult,
    WorkflowSnapshot,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_new_snapshot_defaults() -> None:
    s = WorkflowSnapshot("wf", "def")
    assert isinstance(s.state, InProgress) and s.position == NotStarted()
    assert s.version is None and s.priority == 3 and s.initial_input is None
    assert s.created_at.utcoffset() == timedelta(0) and s.updated_at == s.created_at
    assert s.completed_tasks == {} and s.last_completed_task_id is None and not s.is_terminal


@pytest.mark.parametrize("priority", [0, 6, -3, True, 2.0, "1", None])
def test_priority_must_be_1_to_5(priority: object) -> None:
    with pytest.raises(ValueError, match="priority"):
        WorkflowSnapshot("wf", "def", priority=priority)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["created_at", "updated_at"])
def test_naive_timestamps_are_refused(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        WorkflowSnapshot("wf", "def", **{field: datetime(2026, 1, 1)})  # type: ignore[arg-type]


def test_version_is_not_part_of_equality() -> None:
    a = WorkflowSnapshot("wf", "def", created_at=T0)
    b = WorkflowSnapshot("wf", "def", created_at=T0, version="v9")
    assert a == b


def test_progress_helpers() -> None:
    s = WorkflowSnapshot("wf", "def", initial_input=b"in", created_at=T0)
    s.update_position(AtTask("a"))
    assert s.position == AtTask("a") and s.updated_at > T0
    output = bytearray(b"out-a")
    s.mark_task_completed("a", output)  # type: ignore[arg-type]
    output[:] = b"changed"
    assert s.completed_tasks == {"a": TaskResult("a", b"out-a")}, "outputs are copied to bytes"
    assert type(s.completed_tasks["a"].output) is bytes
    assert s.last_completed_task_id == "a"
    s.mark_task_completed("b", b"")
    assert s.last_completed_task_id == "b" and s.task_input() == b""


def test_available_task_ids() -> None:
    s = WorkflowSnapshot("wf", "def")
    assert s.available_task_ids() == []
    s.update_position(AtTask("a"))
    assert s.available_task_ids() == ["a"]
    s.mark_task_completed("a", b"x")
    assert s.available_task_ids() == [], "a completed task is not offered again"
    s.update_position(AtFork("f", ["b", "c", "d", "e"], ["e"]))
    s.mark_task_completed("c", b"y")
    assert s.available_task_ids() == ["b", "d"], "fork branches in order, minus completed ones"
    s.update_position(AtJoin("f", ["b", "c", "d", "e"]))
    assert s.available_task_ids() == []
    s.mark_completed(b"done")
    assert s.available_task_ids() == []


def test_task_input() -> None:
    s = WorkflowSnapshot("wf", "def", initial_input=b"initial")
    assert s.task_input() == b"initial"
    s.mark_task_completed("a", b"out-a")
    assert s.task_input() == b"out-a"
    s.state = InProgress(AtTask("b"), {}, "gone")
    assert s.task_input() == b"initial", "a last task without a result falls back to the initial input"
    assert WorkflowSnapshot("wf", "def").task_input() is None


@pytest.mark.parametrize("finish", ["completed", "failed"])
def test_final_states_drop_results_and_are_final(finish: str) -> None:
    s = WorkflowSnapshot("wf", "def")
    s.mark_task_completed("a", b"x")
    if finish == "completed":
        s.mark_completed(bytearray(b"final"))  # type: ignore[arg-type]
        assert s.state == Completed(b"final") and type(s.state.final_output) is bytes
    else:
        s.mark_failed("boom")
        assert s.state == Failed("boom")
    assert s.is_terminal and s.completed_tasks == {} and s.position is None
    assert s.last_completed_task_id is None
    mutations: list[Callable[[], None]] = [
        lambda: s.mark_task_completed("b", b"y"),
        lambda: s.update_position(AtTask("b")),
        lambda: s.mark_completed(b"again"),
        lambda: s.mark_failed("again"),
    ]
    for mutate in mutations:
        with pytest.raises(ConflictError, match="final"):
            mutate()


def test_cancelled_keeps_results() -> None:
    results = {"a": TaskResult("a", b"x")}
    s = WorkflowSnapshot("wf", "def", state=Cancelled("why", "who", T0, results, "b"))
    assert s.is_terminal and s.completed_tasks == results and s.position is None
    with pytest.raises(ConflictError):
        s.mark_task_completed("b", b"y")


def test_positions_are_immutable_values() -> None:
    fork = AtFork("f", ["a", "b"], iter(["a"]))
    assert fork == AtFork("f", ("a", "b"), ("a",)) and fork.completed_branches == ("a",)
    assert hash(fork) == hash(AtFork("f", ["a", "b"], ["a"]))
    assert AtJoin("j", ["a"]) == AtJoin("j", ("a",)) and AtJoin("j").completed_branches == ()
    with pytest.raises(AttributeError):
        fork.fork_id = "g"  # type: ignore[misc]
    assert NotStarted() == NotStarted() and AtTask("a") != AtTask("A")


def test_claim_expiry() -> None:
    claim = TaskClaim("i", "t", "w", T0, T0 + timedelta(seconds=10), 1)
    assert not claim.is_expired(T0 + timedelta(seconds=10) - timedelta(microseconds=1))
    assert claim.is_expired(T0 + timedelta(seconds=10)), "expired when now == expires_at"
    forever = TaskClaim("i", "t", "w", T0, None, 1)
    assert not forever.is_expired(datetime.max.replace(tzinfo=timezone.utc))
    assert not forever.is_expired()
    assert TaskClaim("i", "t", "w", T0, T0, 1).is_expired(), "without now, the system clock decides"


@pytest.mark.parametrize("field", ["claimed_at", "expires_at"])
def test_claim_refuses_naive_times(field: str) -> None:
    times = {"claimed_at": T0, "expires_at": T0, field: datetime(2026, 1, 1)}
    with pytest.raises(ValueError, match=field):
        TaskClaim("i", "t", "w", times["claimed_at"], times["expires_at"], 1)


def test_cancellation_request_refuses_naive_time() -> None:
    with pytest.raises(ValueError, match="requested_at"):
        CancellationRequest("i", "why", "who", datetime(2026, 1, 1))


def test_manual_clock() -> None:
    clock = ManualClock(T0)
    assert clock.now() == T0
    clock.advance(timedelta(seconds=1.5))
    assert clock.now() == T0 + timedelta(seconds=1.5)
    with pytest.raises(ValueError):
        clock.advance(timedelta(seconds=-1))
    with pytest.raises(ValueError):
        ManualClock(datetime(2026, 1, 1))
    plus_one = timezone(timedelta(hours=1))
    assert ManualClock(T0.astimezone(plus_one)).now().utcoffset() == timedelta(0)
