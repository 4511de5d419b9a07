"""Moving a workflow's position forward from the results recorded so far.

The position is a function of the recorded results: :func:`advance` applies every step it can,
so it is idempotent, any worker may call it, and a worker that died between recording a result
and advancing leaves nothing that the next call cannot repair. The few choices it makes (a
route's branch, a loop's next iteration, a delay's wake time) are made once, when the position
moves, and kept in the position.
"""

from __future__ import annotations

from datetime import datetime

from objstore_wfp.model import (
    AtDelay,
    AtFork,
    AtSignal,
    AtTask,
    ExecutionPosition,
    InProgress,
    NotStarted,
    WorkflowSnapshot,
)
from objstore_wfp.model.time import utcnow
from objstore_wfp.runtime.codec import Codec
from objstore_wfp.runtime.errors import FlowDefinitionError
from objstore_wfp.runtime.flow import (
    Child,
    Delay,
    Flow,
    Fork,
    Loop,
    Place,
    Route,
    Unit,
    WaitForSignal,
    child_done_id,
    iteration_id,
)


def unit_position(unit: Unit, unit_id: str, now: datetime) -> ExecutionPosition:
    """Where a workflow stands when it reaches ``unit`` (run under ``unit_id``) at ``now``."""
    if isinstance(unit, Delay):
        return AtDelay(unit_id, now + unit.duration)
    if isinstance(unit, WaitForSignal):
        return AtSignal(unit_id, unit.signal, None if unit.timeout is None else now + unit.timeout)
    return AtTask(unit_id)  # a step, or the task that starts a child flow


def _enter(flow: Flow, index: int, snapshot: WorkflowSnapshot, codec: Codec, now: datetime) -> None:
    """Move to ``flow.nodes[index]``, or finish with the current input past the last node."""
    data = snapshot.task_input()
    if index == len(flow.nodes):
        snapshot.mark_completed(data if data is not None else codec.encode(None))
        return
    node = flow.nodes[index]
    if isinstance(node, Fork):
        snapshot.update_position(AtFork(node.name, [b.name for b in node.branches]))
    elif isinstance(node, Loop):
        snapshot.update_position(unit_position(node.body, iteration_id(node.name, 1), now))
    elif isinstance(node, Route):
        try:
            key = node.key(codec.decode(data) if data is not None else None)
        except Exception as exc:
            snapshot.mark_failed(f"route {node.name!r}: key raised {type(exc).__name__}: {exc}")
            return
        unit = dict(node.branches).get(key, node.default) if isinstance(key, str) else None
        if unit is None:
            snapshot.mark_failed(f"route {node.name!r}: no branch for key {key!r} and no default")
            return
        snapshot.update_position(unit_position(unit, unit.name, now))
    else:
        snapshot.update_position(unit_position(node, node.name, now))


def _after(
    flow: Flow, place: Place, output: bytes, snapshot: WorkflowSnapshot, codec: Codec, now: datetime
) -> None:
    """Move past a finished unit: a loop's next iteration, or the next node."""
    node = flow.nodes[place.index]
    if isinstance(node, Loop):
        try:
            done = bool(node.until(codec.decode(output)))
        except Exception as exc:
            snapshot.mark_failed(f"loop {node.name!r}: until raised {type(exc).__name__}: {exc}")
            return
        if not done and place.iteration < node.max_iterations:
            snapshot.update_position(
                unit_position(node.body, iteration_id(node.name, place.iteration + 1), now)
            )
            return
        if not done and node.on_max == "fail":
            snapshot.mark_failed(
                f"loop {node.name!r}: until did not hold after {node.max_iterations} iterations"
            )
            return
    _enter(flow, place.index + 1, snapshot, codec, now)


def _fork(flow: Flow, fork_id: str) -> Fork:
    for node in flow.nodes:
        if isinstance(node, Fork) and node.name == fork_id:
            return node
    raise FlowDefinitionError(f"fork {fork_id!r} is not part of flow {flow.name!r}")


def step_id(position: ExecutionPosition | None) -> str | None:
    """The task id a position waits for (a task, a delay or a signal wait), else ``None``."""
    if isinstance(position, AtTask):
        return position.task_id
    if isinstance(position, (AtDelay, AtSignal)):
        return position.step_id
    return None


def advance(flow: Flow, snapshot: WorkflowSnapshot, codec: Codec, now: datetime | None = None) -> bool:
    """Move ``snapshot`` past every task whose result is recorded; ``True`` if it changed.
    ``now`` (UTC, default the wall clock) dates the wake and timeout times of delays and
    signal waits it reaches.

    - At a task, delay or signal wait that is recorded: the next node (a route's chosen branch,
      a loop's next iteration, a child's completion wait), or ``Completed`` with that output.
    - At a fork: ``completed_branches`` follows the recorded branches; once all are recorded, the
      branch outputs are gathered into ``{branch: output}``, recorded under the fork's id, and
      the position moves to the join task (which thus gets them as its input).
    - A route key or loop condition that raises, a route key without branch or default, and a
      loop that runs out of iterations with ``on_max="fail"`` mark the workflow ``Failed``.

    Raises :class:`FlowDefinitionError` if the snapshot's position is not part of ``flow``.
    """
    now = now or utcnow()
    changed = False
    # Each pass moves at least one place forward or stops; a child takes two places.
    for _ in range(3 * len(flow.nodes) + 3):
        state = snapshot.state
        if not isinstance(state, InProgress):
            return changed
        position, done = state.position, state.completed_tasks
        task_id = step_id(position)
        if isinstance(position, NotStarted):
            flow.check_runnable()
            _enter(flow, 0, snapshot, codec, now)
        elif task_id is not None:
            if task_id not in done:
                return changed
            place = flow.place(task_id)
            if place is None:
                raise FlowDefinitionError(f"task {task_id!r} is not a step of flow {flow.name!r}")
            output = done[task_id].output
            if state.last_completed_task_id != task_id:
                snapshot.mark_task_completed(task_id, output)
            if isinstance(place.unit, Child) and not place.child_done:
                wait = child_done_id(place.unit_id)
                snapshot.update_position(AtSignal(wait, wait, None))
            else:
                _after(flow, place, output, snapshot, codec, now)
        elif isinstance(position, AtFork):
            fork = _fork(flow, position.fork_id)
            finished = tuple(b for b in position.branch_task_ids if b in done)
            if len(finished) < len(position.branch_task_ids):
                if finished == position.completed_branches:
                    return changed
                snapshot.update_position(AtFork(fork.name, position.branch_task_ids, finished))
                return True
            gathered = done.get(fork.name)
            output = (
                gathered.output
                if gathered is not None
                else codec.encode({b: codec.decode(done[b].output) for b in position.branch_task_ids})
            )
            snapshot.mark_task_completed(fork.name, output)
            snapshot.update_position(AtTask(fork.join.name))
        else:  # AtJoin: this runtime never parks a workflow there
            return changed
        changed = True
    return changed


def describe_position(position: ExecutionPosition | None) -> str:
    """A short human-readable form of a position, for listings.

    >>> describe_position(AtFork("fork-1", ["a", "b"], ["a"]))
    'fork fork-1 [a done, b]'
    >>> from datetime import datetime, timezone
    >>> describe_position(AtSignal("wait-ok", "ok", datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)))
    'wait-ok: signal ok (timeout 2026-01-02 03:04:05Z)'
    """
    if position is None:
        return "-"
    if isinstance(position, NotStarted):
        return "not started"
    if isinstance(position, AtTask):
        return f"task {position.task_id}"
    if isinstance(position, AtDelay):
        return f"{position.step_id}: delay until {_when(position.wake_at)}"
    if isinstance(position, AtSignal):
        timeout = "no timeout" if position.timeout_at is None else f"timeout {_when(position.timeout_at)}"
        return f"{position.step_id}: signal {position.signal_name} ({timeout})"
    if isinstance(position, AtFork):
        done = set(position.completed_branches)
        parts = [f"{b} done" if b in done else b for b in position.branch_task_ids]
        return f"fork {position.fork_id} [{', '.join(parts)}]"
    return f"join {position.join_id}"


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")
