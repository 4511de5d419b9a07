"""The request budget, counted by a ``CountingStore`` around the real store.

Pins the number of store requests of every operation (LIST counted per 1,000-key page), so a
change that adds a request shows up here, and checks the contract's promises: a load costs one
GET (plus one per blob), ``find_available_tasks`` costs the same with 10,000 idle instances as
with 100 and nothing per claimed task, and an idle poll is LISTs only. A first claim costs one
request where the task was reserved for the claimer (a runtime worker's next step) and three
otherwise (layout 2 moves the task's index entry to the lease's expiry: PUT, DELETE); the
contract's budget says one. Run with ``-s`` to see the table.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import orjson
import pytest

from objstore_wfp import AtFork, AtTask, ManualClock, ObjectStoreBackend, WorkflowSnapshot
from objstore_wfp.backends import layout
from objstore_wfp.stores.counting import CountingStore
from tests.backends import StoreTarget, local_store_target, memory_store_target, store_target

__all__ = ["local_store_target", "memory_store_target", "store_target"]

pytestmark = pytest.mark.timeout(180)

READY = 20  # instances with one ready task each, the same in every root compared
MEASURED: dict[str, dict[str, int]] = {}


async def _open(target: StoreTarget, **kwargs: Any) -> tuple[ObjectStoreBackend, CountingStore]:
    backend = target.backend_through(CountingStore, **kwargs)
    assert isinstance(backend.store, CountingStore)
    await backend.verify_store()  # the one-time probe is not part of any operation's cost
    await backend.list_snapshots()  # nor is the one-time check of the layout marker
    return backend, backend.store


async def _cost(counting: CountingStore, label: str, call: Callable[[], Awaitable[Any]]) -> dict[str, int]:
    counting.reset()
    await call()
    counts = dict(counting.counts)
    MEASURED[label] = counts
    return counts


def _total(counts: dict[str, int]) -> int:
    return sum(counts.values())


def _table() -> str:
    lines = [f"{'operation':<52} {'total':>5}  requests"]
    for label, counts in MEASURED.items():
        detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        lines.append(f"{label:<52} {_total(counts):>5}  {detail}")
    return "\n".join(lines)


#: The measured cost of each operation (layout 2), the same on every store but where noted.
#: Remembered copies save reads: a compare-and-swap starts from the copy this backend last read
#: or wrote, and a claim it granted is not read back for a renewal or a fenced write.
OPERATION_COSTS: dict[str, dict[str, int]] = {
    # The first task's index entry, then the snapshot (create-if-absent).
    "create_snapshot (1 ready task)": {"put": 1, "put_if_absent": 1},
    # A version-less save reads first: it may replace an instance.
    "save (create, 1 ready task)": {"get": 1, "put": 1, "put_if_absent": 1},
    # A task any poll may offer: the snapshot is read (a cached copy may be of a deleted
    # incarnation), and the claim first (a lost race then costs a GET, not a refused PUT); its
    # fresh entry moves to the lease's expiry (PUT, DELETE) before the claim is created
    # (create-if-absent). claim_available claims from the copy its poll read: one GET less.
    "claim (first claim of a task)": {"get": 2, "put": 1, "delete": 1, "put_if_absent": 1},
    "claim (task held: refused)": {"get": 2},
    # The snapshot is read fresh: a claim of an incarnation deleted since must not be renewed
    # (a cached copy may still hold that incarnation).
    "extend (a heartbeat)": {"get": 1, "put_if_version": 1},
    # One fenced compare-and-swap, then the leased entry goes (the fresh one went at the claim).
    "save_task_result (with claim)": {"put_if_version": 1, "delete": 1},
    # The task is no longer ready (its result is recorded): no entry to put. The snapshot (the
    # cache was dropped by the result) and the claim are read, and the snapshot again fresh (as
    # for extend); the claim's entry is deleted.
    "release": {"get": 3, "put_if_version": 1, "delete": 1},
    # The snapshot's and the claim's reads, the claim's compare-and-swap, then its token is
    # published.
    "claim (after a release)": {"get": 2, "put_if_version": 2},
    "load (no blobs)": {"get": 1},
    "save (CAS, 0 -> 2 ready tasks)": {"put": 2, "put_if_version": 1},
    "save_task_result (no claim)": {"put_if_version": 1, "delete": 1},
    "load_task_result": {"get": 1},
    "save (CAS, ready task x -> y)": {"put": 1, "put_if_version": 1, "delete": 1},
    # z's reserved (leased) entry before the CAS; then y's leased entry goes (its fresh one
    # went when y was claimed).
    "record_and_advance (y -> z, z reserved)": {"put": 1, "put_if_version": 1, "delete": 1},
    # The reserved entry is already leased into the future: only the claim is written.
    "claim (the reserved task)": {"put_if_absent": 1},
    "load (3 blobs: input, 2 outputs)": {"get": 4},
    "request_cancellation": {"put_if_version": 1},
    "check_and_cancel (pending request)": {"get": 1, "put_if_version": 1, "delete": 1},
    "check_and_cancel (nothing pending)": {"get": 1},
}
#: Where stores differ: the snapshot's conditional delete is one DELETE, or a tombstone CAS and a
#: DELETE where the store has no If-Match on DELETE (LocalStack); then the claim's release and
#: its leased entry, the ready entries, a LIST of the incarnation's blob folder and its blobs.
DELETE_TOTAL = 11


async def test_cost_of_each_operation(store_target: StoreTarget) -> None:
    MEASURED.clear()
    b, c = await _open(store_target, inline_limit=1024)
    hour = timedelta(hours=1)
    created = WorkflowSnapshot("budget/0", "flow", initial_input=b"in")
    created.update_position(AtTask("a"))
    await _cost(c, "create_snapshot (1 ready task)", lambda: b.create_snapshot(created))
    snap = WorkflowSnapshot("budget/1", "flow", initial_input=b"in")
    snap.update_position(AtTask("a"))
    await _cost(c, "save (create, 1 ready task)", lambda: b.save_snapshot(snap))
    await _cost(c, "claim (first claim of a task)", lambda: b.claim_task("budget/1", "a", "w", hour))
    await _cost(c, "claim (task held: refused)", lambda: b.claim_task("budget/1", "a", "v", hour))
    await _cost(c, "extend (a heartbeat)", lambda: b.extend_task_claim("budget/1", "a", "w", hour))
    claim = (await b.list_claims("budget/1"))[0]
    await _cost(
        c, "save_task_result (with claim)", lambda: b.save_task_result("budget/1", "a", b"o", claim=claim)
    )
    await _cost(c, "release", lambda: b.release_task_claim("budget/1", "a", "w"))
    await _cost(c, "claim (after a release)", lambda: b.claim_task("budget/1", "a", "w", hour))

    await _cost(c, "load (no blobs)", lambda: b.load_snapshot("budget/1"))
    loaded = await b.load_snapshot("budget/1")
    loaded.mark_task_completed("a", b"o")
    loaded.update_position(AtFork("f", ["b1", "b2"], []))
    await _cost(c, "save (CAS, 0 -> 2 ready tasks)", lambda: b.save_snapshot(loaded))
    await _cost(c, "save_task_result (no claim)", lambda: b.save_task_result("budget/1", "b1", b"x"))
    await _cost(c, "load_task_result", lambda: b.load_task_result("budget/1", "b1"))
    moving = WorkflowSnapshot("budget/moving", "flow", initial_input=b"in")
    moving.update_position(AtTask("x"))
    await b.save_snapshot(moving)
    moving.update_position(AtTask("y"))
    await _cost(c, "save (CAS, ready task x -> y)", lambda: b.save_snapshot(moving))
    on_y = await b.claim_task("budget/moving", "y", "w", hour)
    assert on_y is not None

    def to_z(s: WorkflowSnapshot) -> bool:
        s.update_position(AtTask("z"))
        return True

    async def record() -> None:
        assert on_y is not None
        _, reserved = await b.record_and_advance(on_y, b"y out", to_z, reserve=hour)
        assert reserved == ["z"]

    await _cost(c, "record_and_advance (y -> z, z reserved)", record)
    await _cost(c, "claim (the reserved task)", lambda: b.claim_task("budget/moving", "z", "w", hour))

    big = WorkflowSnapshot("budget/blobs", "flow", initial_input=b"i" * 2000)
    big.update_position(AtFork("f", ["c1", "c2", "c3"], []))
    await b.save_snapshot(big)
    for task in ("c1", "c2"):
        await b.save_task_result("budget/blobs", task, task.encode() * 1000)
    await b.claim_task("budget/blobs", "c3", "w", hour)
    await _cost(c, "load (3 blobs: input, 2 outputs)", lambda: b.load_snapshot("budget/blobs"))

    await _cost(c, "request_cancellation", lambda: b.request_cancellation("budget/1", "stop", "me"))
    await _cost(c, "check_and_cancel (pending request)", lambda: b.check_and_cancel("budget/1"))
    await _cost(c, "check_and_cancel (nothing pending)", lambda: b.check_and_cancel("budget/moving"))
    await _cost(c, "delete_snapshot (3 blobs, 1 claim)", lambda: b.delete_snapshot("budget/blobs"))
    await b.close()
    print(f"\n{store_target.name}:\n" + _table())
    assert {k: v for k, v in MEASURED.items() if k in OPERATION_COSTS} == OPERATION_COSTS
    tombstone = 0 if b.store.supports_conditional_delete else 1
    assert _total(MEASURED["delete_snapshot (3 blobs, 1 claim)"]) == DELETE_TOTAL + tombstone


async def _ready_instances(b: ObjectStoreBackend, clock: ManualClock) -> None:
    for n in range(READY):
        # One millisecond apart: tasks tied on ready time are read as a group, which would make
        # the cost depend on how fast this loop runs.
        clock.advance(timedelta(milliseconds=1))
        snap = WorkflowSnapshot(f"ready/{n:03d}", "flow", initial_input=f"in {n}".encode())
        snap.priority = 1 + n % 5
        snap.update_position(AtTask("t"))
        await b.save_snapshot(snap)


async def _idle_instances(target: StoreTarget, b: ObjectStoreBackend, count: int) -> None:
    """``count`` idle instances (half completed, a fifth of those with a released claim, half not
    started), written straight into the store from two template objects: the bytes real saves
    write, but fast."""
    templates = {}
    for kind in ("done", "new"):
        snap = WorkflowSnapshot(f"template-{kind}", "flow", initial_input=b"in")
        if kind == "done":
            snap.update_position(AtTask("t"))
            await b.save_snapshot(snap)
            await b.claim_task(snap.instance_id, "t", "w", None)
            await b.save_task_result(snap.instance_id, "t", b"out")
            await b.release_task_claim(snap.instance_id, "t", "w")
            snap = await b.load_snapshot(snap.instance_id)
            snap.mark_completed(b"final")
        await b.save_snapshot(snap)
        store = b.store
        instance = layout.encode_id(snap.instance_id)
        doc = orjson.loads((await store.get(layout.snapshot_key(instance))).data)  # type: ignore[union-attr]
        claim = await store.get(layout.claim_key(instance, "t"))
        templates[kind] = (doc, None if claim is None else orjson.loads(claim.data))
    objects = {}
    for n in range(count):
        doc, claim = templates["done" if n % 2 else "new"]
        instance_id = f"idle/{n:05d}"
        instance = layout.encode_id(instance_id)
        objects[layout.snapshot_key(instance)] = orjson.dumps({**doc, "instance_id": instance_id})
        if claim is not None and n % 10 == 1:
            objects[layout.claim_key(instance, "t")] = orjson.dumps({**claim, "instance_id": instance_id})
    await target.seed(objects)


async def _find_costs(target: StoreTarget, idle: int) -> dict[str, Counter[str]]:
    clock = ManualClock()
    b, c = await _open(target, clock=clock)
    await _ready_instances(b, clock)
    await _idle_instances(target, b, idle)
    assert len(await b.list_snapshots()) == READY + idle + 2
    costs = {}
    for limit in (1, 10, READY):
        found = await b.find_available_tasks("w", limit)
        assert len(found) == limit
        assert [t.priority for t in found] == sorted(t.priority for t in found)

        async def find(limit: int = limit) -> None:
            await b.find_available_tasks("w", limit)

        costs[f"find L={limit}"] = Counter(
            await _cost(c, f"find L={limit} ({READY} ready, {idle} idle)", find)
        )
    # Claimed ready tasks are skipped at no cost: a claim moves the task's entry to its lease's
    # expiry, so the LIST shows it not due.
    for task in await b.find_available_tasks("w", 5):
        await b.claim_task(task.instance_id, task.task_id, "other", timedelta(hours=1))
    label = f"find L=1 (first 5 of {READY} ready claimed, {idle} idle)"
    costs["find L=1, 5 claimed"] = Counter(await _cost(c, label, lambda: b.find_available_tasks("w", 1)))
    await b.close()
    return costs


def _check_find_costs(small: dict[str, Counter[str]], large: dict[str, Counter[str]]) -> None:
    assert small == large
    for limit in (1, 10):
        # One LIST page of the ready index (cancellation requests live in the snapshots); then
        # per task returned its snapshot: a fresh entry's claim needs no read.
        assert large[f"find L={limit}"] == Counter({"list": 1, "get": limit})
    # The first five ready tasks are claimed: their entries are not due, skipped unread.
    assert large["find L=1, 5 claimed"] == Counter({"list": 1, "get": 1})


async def test_find_costs_the_same_with_10000_idle_instances_as_with_100(
    memory_store_target: StoreTarget,
) -> None:
    # In memory: writing 10,000 objects to a busy disk would take longer than the rest of the test.
    MEASURED.clear()
    small = await _find_costs(memory_store_target.child("small"), 100)
    large = await _find_costs(memory_store_target.child("large"), 10_000)
    _check_find_costs(small, large)
    print(f"\n{memory_store_target.name}:\n" + _table())


@pytest.mark.slow
async def test_find_costs_the_same_with_1000_idle_instances_as_with_100(store_target: StoreTarget) -> None:
    MEASURED.clear()
    small = await _find_costs(store_target.child("small"), 100)
    large = await _find_costs(store_target.child("large"), 1_000)
    _check_find_costs(small, large)


ENDINGS = ["save_task_result and release", "takeover, then result", "claimed without TTL, deleted"]


@pytest.mark.parametrize("ending", ENDINGS)
async def test_an_idle_poll_is_lists_only(store_target: StoreTarget, ending: str) -> None:
    # Issue 11: an idle poll is LISTs only. Every task here was claimed and then finished or
    # deleted; no entry a claim placed may outlive its task, or every poll after its lease's
    # expiry reads the snapshot for it (until STALE_GRACE after that expiry, when a poll
    # deletes it), and an entry of a lease without expiry stays for good: repair() keeps it too.
    clock = ManualClock()
    b, c = await _open(store_target, clock=clock)
    ttl = timedelta(seconds=30)
    for n in range(3):
        snap = WorkflowSnapshot(f"idle/{n}", "flow", initial_input=b"in")
        snap.update_position(AtTask("t"))
        await b.save_snapshot(snap)
        if ending == "claimed without TTL, deleted":
            assert await b.claim_task(snap.instance_id, "t", "w", None) is not None
            await b.delete_snapshot(snap.instance_id)
            continue
        claim = await b.claim_task(snap.instance_id, "t", "w", ttl)
        assert claim is not None
        if ending == "takeover, then result":
            clock.advance(ttl + timedelta(seconds=1))
            claim = await b.claim_task(snap.instance_id, "t", "w2", ttl)
            assert claim is not None and claim.token == 2
        await b.save_task_result(snap.instance_id, "t", b"out", claim=claim)
        await b.release_task_claim(snap.instance_id, "t", claim.worker_id)
    clock.advance(2 * ttl)  # every lease has run out
    cost = await _cost(c, f"find, all idle ({ending})", lambda: b.find_available_tasks("w", 10))
    entries = [o.key async for o in b.store.list(layout.READY)]
    await b.repair(grace=timedelta(0))
    repaired = [o.key async for o in b.store.list(layout.READY)]
    await b.close()
    print(f"\n{store_target.name}: {cost}, entries left: {entries}, after repair: {repaired}")
    assert cost == {"list": 1}
    assert entries == []
    assert repaired == []
