"""The data model: snapshots, states, positions and the records backends exchange."""

from objstore_wfp.model.positions import (
    AtDelay,
    AtFork,
    AtJoin,
    AtSignal,
    AtTask,
    ExecutionPosition,
    NotStarted,
)
from objstore_wfp.model.records import (
    AvailableTask,
    CancellationRequest,
    PauseRequest,
    Signal,
    TaskClaim,
    TaskResult,
)
from objstore_wfp.model.snapshot import WorkflowSnapshot
from objstore_wfp.model.states import Cancelled, Completed, Failed, InProgress, WorkflowState

__all__ = [
    "AtDelay",
    "AtFork",
    "AtJoin",
    "AtSignal",
    "AtTask",
    "AvailableTask",
    "CancellationRequest",
    "Cancelled",
    "Completed",
    "ExecutionPosition",
    "Failed",
    "InProgress",
    "NotStarted",
    "PauseRequest",
    "Signal",
    "TaskClaim",
    "TaskResult",
    "WorkflowSnapshot",
    "WorkflowState",
]
