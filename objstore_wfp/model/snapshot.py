"""The persisted state of one workflow instance."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from objstore_wfp.errors import ConflictError
from objstore_wfp.model.positions import AtDelay, AtFork, AtSignal, AtTask, ExecutionPosition
from objstore_wfp.model.records import TaskResult
from objstore_wfp.model.states import (
    TERMINAL_STATES,
    Cancelled,
    Completed,
    Failed,
    InProgress,
    WorkflowState,
)
from objstore_wfp.model.time import require_aware, utcnow

MIN_PRIORITY, MAX_PRIORITY, DEFAULT_PRIORITY = 1, 5, 3


@dataclass
class WorkflowSnapshot:
    """The state of one workflow instance, as saved by a backend.

    >>> s = WorkflowSnapshot("order-7", "def-abc", initial_input=b"{}")
    >>> s.position, s.version
    (NotStarted(), None)
    >>> s.mark_task_completed("charge", b"ok")
    >>> s.update_position(AtTask("ship"))
    >>> s.completed_tasks["charge"].output, s.last_completed_task_id
    (b'ok', 'charge')
    >>> s.mark_completed(b"done"); s.is_terminal
    True
    """

    instance_id: str
    definition_hash: str
    initial_input: bytes | None = field(default=None, kw_only=True)
    priority: int = field(default=DEFAULT_PRIORITY, kw_only=True)
    state: WorkflowState = field(default_factory=InProgress, kw_only=True)
    created_at: datetime = field(default_factory=utcnow, kw_only=True)
    updated_at: datetime = field(default=None, kw_only=True)  # type: ignore[assignment]
    #: Opaque store version, set by the backend on load and save; ``None`` until first saved.
    version: str | None = field(default=None, kw_only=True, compare=False)

    def __post_init__(self) -> None:
        require_aware(self.created_at, "created_at")
        if self.updated_at is None:
            self.updated_at = self.created_at
        require_aware(self.updated_at, "updated_at")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise ValueError(f"priority must be an int, got {self.priority!r}")
        if not MIN_PRIORITY <= self.priority <= MAX_PRIORITY:
            raise ValueError(f"priority must be {MIN_PRIORITY}..{MAX_PRIORITY}, got {self.priority}")

    # -- views ---------------------------------------------------------------------------------
    @property
    def is_terminal(self) -> bool:
        """Completed, Failed and Cancelled are final: a backend refuses to overwrite them."""
        return isinstance(self.state, TERMINAL_STATES)

    @property
    def position(self) -> ExecutionPosition | None:
        """The position while in progress, else ``None``."""
        return self.state.position if isinstance(self.state, InProgress) else None

    @property
    def completed_tasks(self) -> dict[str, TaskResult]:
        """Results held in the state (empty once Completed or Failed)."""
        if isinstance(self.state, (InProgress, Cancelled)):
            return self.state.completed_tasks
        return {}

    @property
    def last_completed_task_id(self) -> str | None:
        return self.state.last_completed_task_id if isinstance(self.state, InProgress) else None

    def available_task_ids(self) -> list[str]:
        """Tasks this snapshot offers to workers: the current task, or the unfinished branches
        of a fork; nothing once terminal."""
        if not isinstance(self.state, InProgress):
            return []
        done = self.state.completed_tasks
        pos = self.state.position
        if isinstance(pos, AtTask):
            return [] if pos.task_id in done else [pos.task_id]
        if isinstance(pos, AtFork):
            finished = set(pos.completed_branches)
            return [t for t in pos.branch_task_ids if t not in done and t not in finished]
        return []

    def waiting_on(self) -> AtDelay | AtSignal | None:
        """The delay or signal wait the workflow stands at while its step has no recorded
        result, else ``None``. Its step is offered only once due (see :class:`AtDelay`,
        :class:`AtSignal`), never by :meth:`available_task_ids`.

        >>> from datetime import datetime, timezone
        >>> s = WorkflowSnapshot("i", "h")
        >>> s.update_position(AtDelay("nap", datetime(2026, 1, 1, tzinfo=timezone.utc)))
        >>> s.waiting_on().step_id, s.available_task_ids()
        ('nap', [])
        """
        pos = self.position
        if isinstance(pos, (AtDelay, AtSignal)) and pos.step_id not in self.completed_tasks:
            return pos
        return None

    def task_input(self) -> bytes | None:
        """Input for the tasks offered now: the initial input until a task completes, then the
        output of the last completed task."""
        last = self.last_completed_task_id
        if last is None:
            return self.initial_input
        result = self.completed_tasks.get(last)
        return result.output if result else self.initial_input

    # -- mutations -----------------------------------------------------------------------------
    def _in_progress(self) -> InProgress:
        if not isinstance(self.state, InProgress):
            raise ConflictError(
                f"workflow {self.instance_id!r} is {type(self.state).__name__}; its state is final"
            )
        return self.state

    def _touch(self) -> None:
        self.updated_at = utcnow()

    def mark_task_completed(self, task_id: str, output: bytes) -> None:
        state = self._in_progress()
        state.completed_tasks[task_id] = TaskResult(task_id, bytes(output))
        state.last_completed_task_id = task_id
        self._touch()

    def update_position(self, position: ExecutionPosition) -> None:
        self._in_progress().position = position
        self._touch()

    def mark_completed(self, final_output: bytes) -> None:
        self._in_progress()
        self.state = Completed(bytes(final_output))
        self._touch()

    def mark_failed(self, error: str) -> None:
        self._in_progress()
        self.state = Failed(error)
        self._touch()
