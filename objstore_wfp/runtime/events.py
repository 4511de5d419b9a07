"""What a worker reports while it works, for progress displays and statistics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from objstore_wfp.model.time import utcnow

EventKind = Literal[
    "claimed",  # the worker holds the task's lease and will run it
    "started",  # one attempt of the task's function began
    "retrying",  # an attempt failed; the worker backs off and tries again
    "recorded",  # the worker's output was recorded: it is the task's result
    "duplicate",  # another execution's output was recorded first; the worker used that one
    "lost",  # the lease was lost mid-run; the worker abandoned the task without recording
    "failed",  # the task failed its last attempt; the workflow was marked Failed
    "cancelled",  # the workflow was cancelled while the task ran; nothing recorded
    "released",  # the worker gave the lease back without a result (shutdown, cancellation)
    "advanced",  # the worker moved a workflow past recorded results (e.g. after a crash)
]


@dataclass(frozen=True)
class WorkerEvent:
    """One thing that happened in a worker."""

    kind: EventKind
    worker_id: str
    instance_id: str
    task_id: str | None = None
    token: int | None = None
    attempt: int | None = None
    detail: str = ""
    at: datetime = field(default_factory=utcnow)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["at"] = self.at.isoformat()
        return doc


EventHandler = Callable[[WorkerEvent], None]


@dataclass
class WorkerStats:
    """Counters of one worker since it was created."""

    claimed: int = 0
    executions: int = 0
    recorded: int = 0
    duplicates: int = 0
    lost: int = 0
    failed: int = 0
    retries: int = 0
    takeovers: int = 0
