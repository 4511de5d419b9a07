"""Conformance: random operation sequences must behave exactly like the reference backend.

The hand-written tests pin each rule alone; this one lets hypothesis combine operations in orders
nobody thought of (a result after a takeover after a cancellation request after a re-save ...)
and compares every outcome with :class:`~objstore_wfp.InMemoryBackend` on the same clock.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from objstore_wfp.backends.memory import InMemoryBackend
from objstore_wfp.clock import ManualClock
from objstore_wfp.contract import PersistentBackend
from objstore_wfp.model import AtFork, AtJoin, AtTask, NotStarted, TaskClaim, WorkflowSnapshot

# A small world, so that random operations keep meeting the same instances, tasks and claims.
_INSTANCES = st.sampled_from(["i1", "i2"])
_TASKS = st.sampled_from(["a", "b"])
_WORKERS = st.sampled_from(["w1", "w2"])
_OUTPUTS = st.sampled_from([b"x", b"y", b""])
_POSITIONS = st.sampled_from(
    [
        NotStarted(),
        AtTask("a"),
        AtTask("b"),
        AtFork("f", ["a", "b"]),
        AtFork("f", ["a", "b"], ["a"]),
        AtJoin("f"),
    ]
)
_DURATIONS = st.sampled_from([None, timedelta(0), timedelta(seconds=10), timedelta(seconds=30)])

_CREATE = st.tuples(
    st.just("create"), _INSTANCES, _POSITIONS, st.integers(1, 3), st.sampled_from([None, b"in"])
)
_INDEX = st.integers(0, 3)  # picks one of the claims handed out so far
# Workers mostly act on what they found or hold, as real ones do; the plain id-based operations
# stay in to reach the error paths.
_WORK = st.tuples(st.just("work"), _WORKERS, _DURATIONS, _OUTPUTS)
_OTHER_OPS = [
    st.tuples(st.just("claim"), _INSTANCES, _TASKS, _WORKERS, _DURATIONS),
    st.tuples(st.just("release_held"), _INDEX, st.booleans()),
    st.tuples(st.just("extend_held"), _INDEX, st.sampled_from([timedelta(0), timedelta(seconds=20)])),
    st.tuples(st.just("result_held"), _INDEX, _OUTPUTS),
    st.tuples(st.just("release"), _INSTANCES, _TASKS, _WORKERS),
    st.tuples(st.just("extend"), _INSTANCES, _TASKS, _WORKERS, st.just(timedelta(seconds=20))),
    st.tuples(st.just("result"), _INSTANCES, _TASKS, _OUTPUTS),
    st.tuples(st.just("find"), st.sampled_from([1, 2, 10])),
    st.tuples(st.just("load"), _INSTANCES),
    st.tuples(st.just("complete_task"), _INSTANCES, _TASKS, _OUTPUTS, _POSITIONS),
    st.tuples(st.just("move"), _INSTANCES, _POSITIONS),
    st.tuples(st.just("finish"), _INSTANCES, st.sampled_from(["completed", "failed"])),
    st.tuples(st.just("load_result"), _INSTANCES, _TASKS),
    st.tuples(st.just("advance"), st.sampled_from([1, 10, 30])),
    st.tuples(st.just("request"), _INSTANCES),
    st.tuples(st.just("check"), _INSTANCES, st.sampled_from([None, "a"])),
    st.tuples(st.just("clear"), _INSTANCES),
    st.tuples(st.just("get"), _INSTANCES),
    st.tuples(st.just("delete"), _INSTANCES),
    st.tuples(st.just("list")),
]


@st.composite
def _sequences(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """Swarm testing: each sequence uses only a few kinds of operation besides creating and
    working, so the ones it uses meet each other often (a release right after claims, a find
    right after a cancellation request) instead of being drowned by all the others."""
    chosen = draw(st.lists(st.sampled_from(_OTHER_OPS), min_size=2, max_size=6, unique_by=id))
    return draw(st.lists(st.one_of(_CREATE, _WORK, *chosen), min_size=50, max_size=60))


_examples = itertools.count()

# Where two documented errors are both true, docs/semantics.md leaves the choice to the backend.
_EITHER_ERROR = {
    # a result with a claim for an instance that does not exist (deleting released its claims)
    (kind, frozenset(("raises NotFoundError", "raises ClaimLostError")))
    for kind in ("result_held", "work")
}


@dataclass
class _Side:
    """One backend and what a worker using it holds: loaded snapshots and claims."""

    backend: PersistentBackend
    prefix: str
    copies: dict[str, WorkflowSnapshot] = field(default_factory=dict)
    claims: dict[tuple[str, str], TaskClaim] = field(default_factory=dict)

    def iid(self, name: str) -> str:
        return self.prefix + name


async def _apply(side: _Side, op: tuple[Any, ...], clock: ManualClock, fresh: WorkflowSnapshot | None) -> Any:
    b, kind = side.backend, op[0]
    if kind == "create":
        assert fresh is not None
        return await b.save_snapshot(fresh)
    if kind == "load":
        side.copies[op[1]] = await b.load_snapshot(side.iid(op[1]))
        return side.copies[op[1]]
    if kind in ("complete_task", "move", "finish"):
        held = side.copies.get(op[1])
        if held is None:
            return "no copy held"
        if kind == "complete_task":
            held.mark_task_completed(op[2], op[3])
            held.update_position(op[4])
        elif kind == "move":
            held.update_position(op[2])
        elif op[2] == "completed":
            held.mark_completed(b"final")
        else:
            held.mark_failed("boom")
        held.updated_at = clock.now()  # the helpers stamp wall-clock time; keep both sides equal
        return await b.save_snapshot(held)
    if kind == "work":  # find, claim the first task found, record its output under the claim
        found = await b.find_available_tasks(op[1], 10)
        if not found:
            return "nothing found"
        task = found[0]
        name = task.instance_id[len(side.prefix) :]
        claim = await b.claim_task(task.instance_id, task.task_id, op[1], op[2])
        if claim is None:
            return (task, "claim refused")
        side.claims[(name, task.task_id)] = claim
        await b.save_task_result(task.instance_id, task.task_id, op[3], claim=claim)
        return (task, claim)
    if kind in ("release_held", "extend_held", "result_held"):
        if not side.claims:
            return "no claim held"
        holding = side.claims[sorted(side.claims)[op[1] % len(side.claims)]]
        if kind == "release_held":
            worker = ("w2" if holding.worker_id == "w1" else "w1") if op[2] else holding.worker_id
            return await b.release_task_claim(holding.instance_id, holding.task_id, worker)
        if kind == "extend_held":
            return await b.extend_task_claim(holding.instance_id, holding.task_id, holding.worker_id, op[2])
        return await b.save_task_result(holding.instance_id, holding.task_id, op[2], claim=holding)
    if kind == "result":
        return await b.save_task_result(side.iid(op[1]), op[2], op[3])
    if kind == "load_result":
        return await b.load_task_result(side.iid(op[1]), op[2])
    if kind == "claim":
        claim = await b.claim_task(side.iid(op[1]), op[2], op[3], op[4])
        if claim is not None:
            side.claims[(op[1], op[2])] = claim
        return claim
    if kind == "release":
        return await b.release_task_claim(side.iid(op[1]), op[2], op[3])
    if kind == "extend":
        return await b.extend_task_claim(side.iid(op[1]), op[2], op[3], op[4])
    if kind == "find":
        return await b.find_available_tasks("finder", op[1])
    if kind == "request":
        return await b.request_cancellation(side.iid(op[1]), "why", "admin")
    if kind == "check":
        return await b.check_and_cancel(side.iid(op[1]), op[2])
    if kind == "clear":
        return await b.clear_cancellation_request(side.iid(op[1]))
    if kind == "get":
        return await b.get_cancellation_request(side.iid(op[1]))
    if kind == "delete":
        return await b.delete_snapshot(side.iid(op[1]))
    if kind == "list":
        return await b.list_snapshots()
    raise AssertionError(f"unknown operation {op!r}")


async def _outcome(
    side: _Side, op: tuple[Any, ...], clock: ManualClock, fresh: WorkflowSnapshot | None
) -> Any:
    try:
        result = await _apply(side, op, clock, fresh)
    except Exception as exc:
        return f"raises {type(exc).__name__}"
    if isinstance(result, str) and op[0] in ("create", "complete_task", "move", "finish"):
        return "saved"  # versions are opaque and differ between backends
    return result


class DifferentialTests:
    """Random operation sequences give the same outcomes as the reference InMemoryBackend."""

    @settings(
        max_examples=12,
        deadline=None,
        derandomize=True,
        # Shrinking replays hundreds of sequences, minutes against a real store; the failure
        # message already names the diverging step and the operations before it.
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.differing_executors,
        ],
    )
    @given(ops=_sequences())
    async def test_behaves_like_the_reference(
        self, backend: PersistentBackend, clock: ManualClock, ops: list[tuple[Any, ...]]
    ) -> None:
        # The backend lives across examples: clear what earlier examples left to find, and use
        # fresh ids so their leftover claims cannot matter.
        for leftover in await backend.list_snapshots():
            await backend.delete_snapshot(leftover)
        prefix = f"ex{next(_examples)}-"
        tested = _Side(backend, prefix)
        reference = _Side(InMemoryBackend(clock=clock), prefix)
        for step, op in enumerate(ops):
            if op[0] == "advance":
                clock.advance(timedelta(seconds=op[1]))
                continue
            fresh = None
            if op[0] == "create":
                fresh = WorkflowSnapshot(prefix + op[1], "def", initial_input=op[4], priority=op[3])
                fresh.update_position(op[2])
                fresh.created_at = fresh.updated_at = clock.now()
            got = await _outcome(tested, op, clock, copy.deepcopy(fresh))
            want = await _outcome(reference, op, clock, copy.deepcopy(fresh))
            if (
                isinstance(got, str)
                and isinstance(want, str)
                and (op[0], frozenset((got, want))) in _EITHER_ERROR
            ):
                continue
            assert got == want, (
                f"step {step} {op!r} after {ops[:step]!r}:\n"
                f"  this backend gave       {got!r}\n  the reference gave {want!r}"
            )
