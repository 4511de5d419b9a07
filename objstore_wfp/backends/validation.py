"""Argument checks shared by every backend, run before any I/O."""

from __future__ import annotations

from datetime import datetime, timedelta

from objstore_wfp.errors import InvalidArgumentError
from objstore_wfp.ids import validate_id
from objstore_wfp.model import (
    AtDelay,
    AtFork,
    AtJoin,
    AtSignal,
    AtTask,
    Cancelled,
    Completed,
    Failed,
    InProgress,
    NotStarted,
    TaskClaim,
    TaskResult,
    WorkflowSnapshot,
)
from objstore_wfp.model.snapshot import MAX_PRIORITY, MIN_PRIORITY

# A sentinel rather than None: None passed as an id is itself an illegal id and must be refused.
_ABSENT: object = object()


def check_ids(instance_id: object, task_id: object = _ABSENT, worker_id: object = _ABSENT) -> None:
    """Validate the ids a method takes; leave out the ones it does not take."""
    validate_id(instance_id, "instance_id")
    if task_id is not _ABSENT:
        validate_id(task_id, "task_id")
    if worker_id is not _ABSENT:
        validate_id(worker_id, "worker_id")


def check_optional_task_id(value: object, what: str) -> None:
    """An optional task id such as ``interrupted_at_task``: ``None`` or a legal id."""
    if value is not None:
        validate_id(value, what)


def check_snapshot(snapshot: WorkflowSnapshot) -> None:
    if not isinstance(snapshot, WorkflowSnapshot):
        raise InvalidArgumentError(f"expected a WorkflowSnapshot, got {type(snapshot).__name__}")
    validate_id(snapshot.instance_id, "instance_id")
    if not isinstance(snapshot.definition_hash, str):
        raise InvalidArgumentError("definition_hash must be a str")
    p = snapshot.priority
    if isinstance(p, bool) or not isinstance(p, int) or not MIN_PRIORITY <= p <= MAX_PRIORITY:
        raise InvalidArgumentError(f"priority must be an int {MIN_PRIORITY}..{MAX_PRIORITY}, got {p!r}")
    _check_aware(snapshot.created_at, "created_at")
    _check_aware(snapshot.updated_at, "updated_at")
    if snapshot.initial_input is not None and not isinstance(snapshot.initial_input, bytes):
        raise InvalidArgumentError(
            f"initial_input must be bytes or None, got {type(snapshot.initial_input).__name__}"
        )
    _check_state(snapshot)
    for task_id, result in snapshot.completed_tasks.items():
        validate_id(task_id, "task_id")
        if not isinstance(result, TaskResult) or not isinstance(result.output, bytes):
            raise InvalidArgumentError(f"the result of task {task_id!r} must be a TaskResult holding bytes")


def _check_state(snapshot: WorkflowSnapshot) -> None:
    # Encoding would otherwise fail deep in the codec with a raw TypeError, or store values a
    # later load cannot decode; task ids in positions become ids workers claim.
    state = snapshot.state
    if isinstance(state, InProgress):
        pos = state.position
        if isinstance(pos, AtTask):
            validate_id(pos.task_id, "task_id")
        elif isinstance(pos, AtFork):
            check_text(pos.fork_id, "fork_id")
            for task_id in (*pos.branch_task_ids, *pos.completed_branches):
                validate_id(task_id, "task_id")
        elif isinstance(pos, AtJoin):
            check_text(pos.join_id, "join_id")
            for task_id in pos.completed_branches:
                validate_id(task_id, "task_id")
        elif isinstance(pos, AtDelay):
            validate_id(pos.step_id, "step_id")
            _check_aware(pos.wake_at, "wake_at")
        elif isinstance(pos, AtSignal):
            validate_id(pos.step_id, "step_id")
            validate_id(pos.signal_name, "signal_name")
            if pos.timeout_at is not None:
                _check_aware(pos.timeout_at, "timeout_at")
        elif not isinstance(pos, NotStarted):
            raise InvalidArgumentError(f"unknown position {pos!r}")
        check_optional_task_id(state.last_completed_task_id, "last_completed_task_id")
    elif isinstance(state, Completed):
        if not isinstance(state.final_output, bytes):
            raise InvalidArgumentError(f"final_output must be bytes, got {type(state.final_output).__name__}")
    elif isinstance(state, Failed):
        check_text(state.error, "error")
    elif isinstance(state, Cancelled):
        check_text(state.reason, "reason")
        check_text(state.cancelled_by, "cancelled_by")
        _check_aware(state.cancelled_at, "cancelled_at")
        check_optional_task_id(state.interrupted_at_task, "interrupted_at_task")
    else:
        raise InvalidArgumentError(f"unknown state {state!r}")


def _check_aware(value: object, what: str) -> None:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidArgumentError(f"{what} must be a timezone-aware datetime, got {value!r}")


def check_output(output: object) -> bytes:
    if not isinstance(output, (bytes, bytearray, memoryview)):
        raise InvalidArgumentError(f"output must be bytes, got {type(output).__name__}")
    return bytes(output)


def check_payload(payload: object) -> bytes:
    """A signal's payload: bytes (``bytearray`` and ``memoryview`` are copied), else
    ``InvalidArgumentError`` (a ``ValueError``)."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise InvalidArgumentError(f"payload must be bytes, got {type(payload).__name__}")
    return bytes(payload)


def check_duration(value: object, what: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, timedelta):
        raise InvalidArgumentError(f"{what} must be a timedelta, got {type(value).__name__}")
    if value < timedelta(0):
        raise InvalidArgumentError(f"{what} must not be negative, got {value}")


def expiry(now: datetime, duration: timedelta) -> datetime:
    """``now + duration``, refusing a duration that runs past the end of the calendar."""
    try:
        return now + duration
    except OverflowError:
        raise InvalidArgumentError(f"a duration of {duration} from {now} is past datetime.max") from None


def check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidArgumentError(f"limit must be an int >= 0, got {limit!r}")
    return limit


def check_text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{what} must be a str, got {type(value).__name__}")
    return value


def check_claim(claim: object) -> TaskClaim:
    """A claim a method acts under (``InvalidArgumentError`` for anything else)."""
    if not isinstance(claim, TaskClaim):
        raise InvalidArgumentError(f"claim must be a TaskClaim, got {type(claim).__name__}")
    validate_id(claim.instance_id, "instance_id")
    validate_id(claim.task_id, "task_id")
    return claim


def check_claim_for(claim: TaskClaim | None, instance_id: str, task_id: str) -> None:
    if claim is None:
        return
    if not isinstance(claim, TaskClaim):
        raise InvalidArgumentError(f"claim must be a TaskClaim, got {type(claim).__name__}")
    if (claim.instance_id, claim.task_id) != (instance_id, task_id):
        raise InvalidArgumentError(
            f"claim is for task {claim.task_id!r} of {claim.instance_id!r}, "
            f"not {task_id!r} of {instance_id!r}"
        )
