"""Argument checks shared by every backend, run before any I/O."""

from __future__ import annotations

from datetime import timedelta

from objstore_wfp.errors import InvalidArgumentError
from objstore_wfp.ids import validate_id
from objstore_wfp.model import TaskClaim, WorkflowSnapshot
from objstore_wfp.model.snapshot import MAX_PRIORITY, MIN_PRIORITY


def check_ids(instance_id: str, task_id: str | None = None, worker_id: str | None = None) -> None:
    validate_id(instance_id, "instance_id")
    if task_id is not None:
        validate_id(task_id, "task_id")
    if worker_id is not None:
        validate_id(worker_id, "worker_id")


def check_snapshot(snapshot: WorkflowSnapshot) -> None:
    if not isinstance(snapshot, WorkflowSnapshot):
        raise InvalidArgumentError(f"expected a WorkflowSnapshot, got {type(snapshot).__name__}")
    validate_id(snapshot.instance_id, "instance_id")
    if not isinstance(snapshot.definition_hash, str):
        raise InvalidArgumentError("definition_hash must be a str")
    p = snapshot.priority
    if isinstance(p, bool) or not isinstance(p, int) or not MIN_PRIORITY <= p <= MAX_PRIORITY:
        raise InvalidArgumentError(f"priority must be an int {MIN_PRIORITY}..{MAX_PRIORITY}, got {p!r}")
    for task_id in snapshot.completed_tasks:
        validate_id(task_id, "task_id")


def check_output(output: object) -> bytes:
    if not isinstance(output, (bytes, bytearray, memoryview)):
        raise InvalidArgumentError(f"output must be bytes, got {type(output).__name__}")
    return bytes(output)


def check_duration(value: object, what: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, timedelta):
        raise InvalidArgumentError(f"{what} must be a timedelta, got {type(value).__name__}")
    if value < timedelta(0):
        raise InvalidArgumentError(f"{what} must not be negative, got {value}")


def check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidArgumentError(f"limit must be an int >= 0, got {limit!r}")
    return limit


def check_text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{what} must be a str, got {type(value).__name__}")
    return value


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
