"""The data model: snapshots, states, positions and the records backends exchange."""

from objstore_wfp.model.positions import AtFork, AtJoin, AtTask, ExecutionPosition, NotStarted
from objstore_wfp.model.records import AvailableTask, CancellationRequest, TaskClaim, TaskResult
from objstore_wfp.model.snapshot import WorkflowSnapshot
from objstore_wfp.model.states import Cancelled, Completed, Failed, InProgress, WorkflowState

__all__ = [
    "AtFork",
    "AtJoin",
    "AtTask",
    "AvailableTask",
    "CancellationRequest",
    "Cancelled",
    "Completed",
    "ExecutionPosition",
    "Failed",
    "InProgress",
    "NotStarted",
    "TaskClaim",
    "TaskResult",
    "WorkflowSnapshot",
    "WorkflowState",
]
