"""Where an in-progress workflow stands."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from objstore_wfp.model.time import require_aware


@dataclass(frozen=True)
class NotStarted:
    """No task has been dispatched yet."""


@dataclass(frozen=True)
class AtTask:
    """The workflow waits for one task."""

    task_id: str


@dataclass(frozen=True)
class AtFork:
    """The workflow runs ``branch_task_ids`` in parallel; ``completed_branches`` are done.

    Sequences are stored as tuples so positions stay hashable and immutable:

    >>> AtFork("f", ["a", "b"]).branch_task_ids
    ('a', 'b')
    """

    fork_id: str
    branch_task_ids: tuple[str, ...]
    completed_branches: tuple[str, ...] = field(default=())

    def __init__(
        self, fork_id: str, branch_task_ids: Iterable[str], completed_branches: Iterable[str] = ()
    ) -> None:
        object.__setattr__(self, "fork_id", fork_id)
        object.__setattr__(self, "branch_task_ids", tuple(branch_task_ids))
        object.__setattr__(self, "completed_branches", tuple(completed_branches))


@dataclass(frozen=True)
class AtJoin:
    """All branches of ``join_id`` have finished and wait to be joined."""

    join_id: str
    completed_branches: tuple[str, ...] = field(default=())

    def __init__(self, join_id: str, completed_branches: Iterable[str] = ()) -> None:
        object.__setattr__(self, "join_id", join_id)
        object.__setattr__(self, "completed_branches", tuple(completed_branches))


@dataclass(frozen=True)
class AtDelay:
    """The workflow sleeps until ``wake_at`` (a timezone-aware UTC instant, judged with the
    observing backend's clock); from then on step ``step_id`` is offered like a task, with the
    snapshot's ``task_input()``. No worker is held while it sleeps."""

    step_id: str
    wake_at: datetime

    def __post_init__(self) -> None:
        require_aware(self.wake_at, "wake_at")


@dataclass(frozen=True)
class AtSignal:
    """The workflow waits for a signal named ``signal_name``. Step ``step_id`` is offered like a
    task once such a signal is pending (its worker takes it with ``deliver_signal``), or once
    ``timeout_at`` (UTC, judged with the backend's clock; ``None``: never) has passed, when
    ``deliver_signal`` finds none and the worker takes the timeout path."""

    step_id: str
    signal_name: str
    timeout_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.timeout_at is not None:
            require_aware(self.timeout_at, "timeout_at")


ExecutionPosition = NotStarted | AtTask | AtFork | AtJoin | AtDelay | AtSignal
