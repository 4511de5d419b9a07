"""Many OS processes race for the same claims and the same results on one store root.

Each racer's wall clock is off by a different amount (-1 h to +1 h, one stepped by an hour
halfway), and each logs, in real time, every interval during which it may act on a claim (from
when the claim or renewal came back to the end of the holder's window counted from when it asked,
cut short when it starts a release); the test then checks the guarantees on the merged logs: one
winner per fresh round, fencing tokens 1, 2, 3, ... per task with no duplicate, and no two
holders' intervals overlapping.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from objstore_wfp import AtFork, AtTask, Completed, WorkflowSnapshot
from tests import procs
from tests.backends import StoreTarget, local_store_target, store_target

__all__ = ["local_store_target", "store_target"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

RACERS = 8
#: Every fourth round lets claims expire under contention; the others release them.
ROUNDS = 40
EXPIRY_TTL = 0.08
EXPIRY_WINDOW = 0.4
#: On a remote store a request takes tens of milliseconds: fewer rounds, longer leases.
REMOTE_ROUNDS = 16
REMOTE_EXPIRY_TTL = 0.3
REMOTE_EXPIRY_WINDOW = 1.2
TASKS = [("race/one", "t1"), ("race/one", "t2"), ("race two ü", "t/../1"), ("race two ü", "T1")]
#: Each racer's wall-clock offset and the step it takes halfway (seconds).
CLOCKS = [(-3600, 0), (-300, 0), (-30, 0), (7, 0), (30, 0), (300, 0), (3600, 0), (0, 3600)]


def _plan(target: StoreTarget) -> list[tuple[str, float, float]]:
    local = target.local_root is not None
    rounds = ROUNDS if local else REMOTE_ROUNDS
    expiry = (
        ("expiry", EXPIRY_TTL, EXPIRY_WINDOW)
        if local
        else ("expiry", REMOTE_EXPIRY_TTL, REMOTE_EXPIRY_WINDOW)
    )
    return [expiry if r % 4 == 3 else ("release", 30.0, 0.0) for r in range(rounds)]


def _overlaps(holds: list[dict[str, Any]]) -> list[str]:
    """Pairs of intervals of one task held under different tokens that overlap in time."""
    problems = []
    by_task: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for h in holds:
        by_task[(h["instance"], h["task"])].append(h)
    for task, intervals in by_task.items():
        # A claim whose answer came after its holder's window had closed (a slow store) is held
        # for no time at all: its holder must not act on it.
        intervals = [h for h in intervals if h["end"] > h["start"]]
        intervals.sort(key=lambda h: h["start"])
        for i, a in enumerate(intervals):
            for b in intervals[i + 1 :]:
                if b["start"] >= a["end"]:
                    continue
                if a["token"] != b["token"]:
                    problems.append(
                        f"{task}: token {a['token']} ({a['worker']}) {a['start']:.6f}-{a['end']:.6f}"
                        f" overlaps token {b['token']} ({b['worker']}) {b['start']:.6f}-{b['end']:.6f}"
                    )
    return problems


async def test_claim_races_across_processes(store_target: StoreTarget, tmp_path: Path) -> None:
    if not store_target.shared_between_processes:
        pytest.skip("the store is private to each process")
    # Every racer sees the instances exist, though claims do not require it.
    async with store_target.backend() as backend:
        for instance in sorted({i for i, _ in TASKS}):
            snap = WorkflowSnapshot(instance, "race")
            snap.update_position(AtFork("f", [t for i, t in TASKS if i == instance], []))
            await backend.save_snapshot(snap)
    ctx = procs.context()
    barrier = ctx.Barrier(RACERS)  # type: ignore[attr-defined]
    outs = [str(tmp_path / f"racer-{n}.json") for n in range(RACERS)]
    codes = procs.run_all(
        procs.race_worker,
        [
            (
                n,
                store_target.url,
                store_target.options,
                TASKS,
                _plan(store_target),
                barrier,
                outs[n],
                *CLOCKS[n],
            )
            for n in range(RACERS)
        ],
        timeout=200,
    )
    assert codes == [0] * RACERS, f"racers exited with {codes}"
    logs = [procs.read_json(p) for p in outs]
    holds = [h for log in logs for h in log["holds"]]
    releases = [r for log in logs for r in log["releases"]]
    plan = _plan(store_target)

    wins = [h for h in holds if h["kind"] == "claim"]
    per_round = Counter((w["round"], (w["instance"], w["task"])) for w in wins)
    takeovers = 0
    for rnd, (kind, _, _) in enumerate(plan):
        for task in TASKS:
            count = per_round[(rnd, task)]
            if kind == "release":
                assert count == 1, f"round {rnd} ({kind}): {count} winners of {task}"
            else:
                assert count >= 1, f"round {rnd} ({kind}): nobody won {task}"
                takeovers += count - 1
    assert takeovers > 0, "no claim expired and was taken over while others raced"

    for task in TASKS:
        tokens = sorted(w["token"] for w in wins if (w["instance"], w["task"]) == task)
        # Fencing: 1, 2, 3, ... (racers' clocks cannot order the wins); a duplicate means two winners.
        assert tokens == list(range(1, len(tokens) + 1)), f"{task}: tokens {tokens}"
    renewers = {(h["instance"], h["task"], h["token"]): h["worker"] for h in wins}
    for h in holds:
        assert renewers[(h["instance"], h["task"], h["token"])] == h["worker"], (
            f"renewed by a non-holder: {h}"
        )

    assert _overlaps(holds) == []

    # At the end of every round exactly one racer (the latest holder) releases each task.
    released = Counter(
        (r["round"], (r["instance"], r["task"])) for r in releases if r["outcome"] == "released"
    )
    for rnd in range(len(plan)):
        for task in TASKS:
            assert released[(rnd, task)] == 1, f"round {rnd}: {released[(rnd, task)]} releases of {task}"
    events: Counter[str] = Counter()
    for log in logs:
        events.update(log["events"])
    print(
        f"\n{RACERS} processes, {len(plan)} rounds x {len(TASKS)} tasks: {len(wins)} claims "
        f"won, {takeovers} expiry takeovers, {events['extends']} renewals, "
        f"{events['extend_lost']} renewals lost"
    )
    async with store_target.backend() as backend:
        claims = await backend.list_claims()
        assert claims == []  # everything released at the end


WRITERS = 8
TASKS_PER_WRITER = 5


async def test_concurrent_results_lose_nothing_and_first_wins(
    store_target: StoreTarget, tmp_path: Path
) -> None:
    if not store_target.shared_between_processes:
        pytest.skip("the store is private to each process")
    instance = "results/fan out"
    own = {n: [f"w{n}/task {k}" for k in range(TASKS_PER_WRITER)] for n in range(WRITERS)}
    shared_task = "the same task"
    # Writers 0 and 1 offer the same bytes: whichever of them loses the race gets a no-op.
    offers = {n: "twin output" if n < 2 else f"output of writer {n}" for n in range(WRITERS)}
    async with store_target.backend() as backend:
        snap = WorkflowSnapshot(instance, "fan", initial_input=b"in")
        snap.update_position(AtFork("f", [t for ts in own.values() for t in ts] + [shared_task], []))
        await backend.save_snapshot(snap)
    barrier = procs.context().Barrier(WRITERS)  # type: ignore[attr-defined]
    outs = [str(tmp_path / f"writer-{n}.json") for n in range(WRITERS)]
    codes = procs.run_all(
        procs.result_worker,
        [
            (
                n,
                store_target.url,
                store_target.options,
                instance,
                own[n],
                shared_task,
                offers[n],
                barrier,
                outs[n],
            )
            for n in range(WRITERS)
        ],
        timeout=120,
    )
    assert codes == [0] * WRITERS, f"writers exited with {codes}"
    outcomes = {n: procs.read_json(outs[n]) for n in range(WRITERS)}
    async with store_target.backend() as backend:
        loaded = await backend.load_snapshot(instance)
        recorded = {t: r.output for t, r in loaded.completed_tasks.items()}
        for n, tasks in own.items():
            for task in tasks:
                assert outcomes[n][task] == "ok"
                assert recorded[task] == f"writer-{n}:{task}".encode(), f"lost or wrong result of {task}"
                assert await backend.load_task_result(instance, task) == recorded[task]
        assert len(recorded) == WRITERS * TASKS_PER_WRITER + 1
        winner = recorded[shared_task].decode()
        succeeded = {n for n in range(WRITERS) if outcomes[n][shared_task] == "ok"}
        # Exactly the writers that offered the recorded bytes saw success; everyone else a conflict.
        assert succeeded == {n for n, offer in offers.items() if offer == winner}
        assert all(outcomes[n][shared_task] == "conflict" for n in set(range(WRITERS)) - succeeded)
        # Recording results offers nothing anew: every fork branch is done.
        assert await backend.find_available_tasks("checker", 100) == []


DRIVERS = 8
FLOWS = 10
STEPS = ["s0", ["p1", "p2", "p3"], "s1", "s2"]


async def test_workers_drive_every_workflow_to_completion(store_target: StoreTarget, tmp_path: Path) -> None:
    """Eight worker processes find, claim, record and advance concurrently: every workflow must
    complete (a lost ready entry would strand one), each task recorded once."""
    if not store_target.shared_between_processes:
        pytest.skip("the store is private to each process")
    flows = {f"flow {n}": STEPS for n in range(FLOWS)}
    async with store_target.backend() as backend:
        for n, instance in enumerate(flows):
            snap = WorkflowSnapshot(instance, "drive", initial_input=f"input {n}".encode())
            snap.priority = 1 + n % 5
            snap.update_position(AtTask("s0"))
            await backend.save_snapshot(snap)
    outs = [str(tmp_path / f"driver-{n}.json") for n in range(DRIVERS)]
    codes = procs.run_all(
        procs.drive_worker,
        [(n, store_target.url, store_target.options, flows, outs[n]) for n in range(DRIVERS)],
        timeout=120,
    )
    assert codes == [0] * DRIVERS, f"drivers exited with {codes}"
    logs = [procs.read_json(p) for p in outs]
    ran = Counter(tuple(r) for log in logs for r in log["ran"])
    stats: Counter[str] = Counter()
    for log in logs:
        stats.update(log["stats"])
    tasks = {(i, t) for i in flows for step in STEPS for t in ([step] if isinstance(step, str) else step)}
    assert set(ran) == tasks
    async with store_target.backend() as backend:
        for instance in flows:
            snap = await backend.load_snapshot(instance)
            assert isinstance(snap.state, Completed), f"{instance} stranded at {snap.position}"
            # s2 ran on s1's output, which ran on p3's, ... on the initial input: no step skipped.
            assert snap.state.final_output.startswith(b"done:s2<s1<p3<s0<input")
            for step in STEPS:
                for task in [step] if isinstance(step, str) else step:
                    assert (await backend.load_task_result(instance, task) or b"").startswith(
                        task.encode() + b"<"
                    )
        assert await backend.find_available_tasks("checker", 10) == []
        assert await backend.list_claims() == []
        report = await backend.repair()
        assert (report.entries_created, report.unreadable) == (0, [])
    print(
        f"\n{DRIVERS} drivers, {FLOWS} workflows x {len(tasks) // FLOWS} tasks: {dict(stats)}; "
        f"{sum(ran.values()) - len(ran)} tasks ran more than once"
    )
