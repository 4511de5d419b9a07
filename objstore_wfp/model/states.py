"""The four states of a workflow instance."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from objstore_wfp.model.positions import ExecutionPosition, NotStarted
from objstore_wfp.model.records import TaskResult


@dataclass
class InProgress:
    position: ExecutionPosition = field(default_factory=NotStarted)
    completed_tasks: dict[str, TaskResult] = field(default_factory=dict)
    last_completed_task_id: str | None = None


@dataclass(frozen=True)
class Completed:
    final_output: bytes


@dataclass(frozen=True)
class Failed:
    error: str


@dataclass
class Cancelled:
    reason: str
    cancelled_by: str
    cancelled_at: datetime
    completed_tasks: dict[str, TaskResult] = field(default_factory=dict)
    interrupted_at_task: str | None = None


WorkflowState = InProgress | Completed | Failed | Cancelled
TERMINAL_STATES = (Completed, Failed, Cancelled)
