"""Where an in-progress workflow stands."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


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


ExecutionPosition = NotStarted | AtTask | AtFork | AtJoin
