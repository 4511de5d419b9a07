"""Moving a workflow's position forward from the results recorded so far.

The position is a function of the recorded results: :func:`advance` applies every step it can,
so it is idempotent, any worker may call it, and a worker that died between recording a result
and advancing leaves nothing that the next call cannot repair.
"""

from __future__ import annotations

from objstore_wfp.model import (
    AtDelay,
    AtFork,
    AtJoin,
    AtTask,
    ExecutionPosition,
    InProgress,
    NotStarted,
    WorkflowSnapshot,
)
from objstore_wfp.runtime.codec import Codec
from objstore_wfp.runtime.errors import FlowDefinitionError
from objstore_wfp.runtime.flow import Flow, Fork, Node, Step


def entry_position(node: Node) -> ExecutionPosition:
    """Where a workflow stands when it reaches ``node``."""
    if isinstance(node, Step):
        return AtTask(node.name)
    return AtFork(node.name, [b.name for b in node.branches])


def start_position(flow: Flow) -> ExecutionPosition:
    """The position a new instance of ``flow`` is submitted at."""
    flow.check_runnable()
    return entry_position(flow.nodes[0])


def _node_index(flow: Flow, task_id: str) -> int:
    """Index of the node a sequential task id (a step or a join) belongs to."""
    for index, node in enumerate(flow.nodes):
        if (isinstance(node, Step) and node.name == task_id) or (
            isinstance(node, Fork) and node.join.name == task_id
        ):
            return index
    raise FlowDefinitionError(f"task {task_id!r} is not a step of flow {flow.name!r}")


def _fork(flow: Flow, fork_id: str) -> Fork:
    for node in flow.nodes:
        if isinstance(node, Fork) and node.name == fork_id:
            return node
    raise FlowDefinitionError(f"fork {fork_id!r} is not part of flow {flow.name!r}")


def advance(flow: Flow, snapshot: WorkflowSnapshot, codec: Codec) -> bool:
    """Move ``snapshot`` past every task whose result is recorded; ``True`` if it changed.

    - At a task that is recorded: the next node, or ``Completed`` with that task's output.
    - At a fork: ``completed_branches`` follows the recorded branches; once all are recorded, the
      branch outputs are gathered into ``{branch: output}``, recorded under the fork's id, and
      the position moves to the join task (which thus gets them as its input).

    Raises :class:`FlowDefinitionError` if the snapshot's position is not part of ``flow``.
    """
    changed = False
    # Each pass moves at least one node forward or stops, so the flow's length bounds the loop.
    for _ in range(2 * len(flow.nodes) + 2):
        state = snapshot.state
        if not isinstance(state, InProgress):
            return changed
        position, done = state.position, state.completed_tasks
        if isinstance(position, NotStarted):
            snapshot.update_position(start_position(flow))
        elif isinstance(position, AtTask):
            if position.task_id not in done:
                return changed
            index = _node_index(flow, position.task_id)
            output = done[position.task_id].output
            if state.last_completed_task_id != position.task_id:
                snapshot.mark_task_completed(position.task_id, output)
            if index + 1 == len(flow.nodes):
                snapshot.mark_completed(output)
            else:
                snapshot.update_position(entry_position(flow.nodes[index + 1]))
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
    """
    if position is None:
        return "-"
    if isinstance(position, NotStarted):
        return "not started"
    if isinstance(position, AtTask):
        return f"task {position.task_id}"
    if isinstance(position, AtFork):
        done = set(position.completed_branches)
        parts = [f"{b} done" if b in done else b for b in position.branch_task_ids]
        return f"fork {position.fork_id} [{', '.join(parts)}]"
    if isinstance(position, AtJoin):
        return f"join {position.join_id}"
    if isinstance(position, AtDelay):
        return f"delay {position.step_id} until {position.wake_at.isoformat()}"
    timeout = "" if position.timeout_at is None else f" until {position.timeout_at.isoformat()}"
    return f"signal {position.signal_name} at {position.step_id}{timeout}"
