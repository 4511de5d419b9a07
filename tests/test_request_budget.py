"""The request budget, counted by a ``CountingStore`` around the real store.

Pins the number of store requests of every operation (LIST counted per 1,000-key page), so a
change that adds a request shows up here, and checks the contract's promises: a first claim
costs one request, a load one GET (plus one per blob), and ``find_available_tasks`` costs the
same with 10,000 idle instances as with 100. Run with ``-s`` to see the table.
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
    backend = target.backend(**kwargs)
    await backend.verify_store()  # the one-time probe is not part of any operation's cost
    counting = CountingStore(backend.store)
    backend.store = counting
    return backend, counting


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


async def test_cost_of_each_operation(store_target: StoreTarget) -> None:
    MEASURED.clear()
    b, c = await _open(store_target, inline_limit=1024)
    hour = timedelta(hours=1)
    snap = WorkflowSnapshot("budget/1", "flow", initial_input=b"in")
    snap.update_position(AtTask("a"))
    assert _total(await _cost(c, "save (create, 1 ready task)", lambda: b.save_snapshot(snap))) == 3

    first = await _cost(c, "claim (first claim of a task)", lambda: b.claim_task("budget/1", "a", "w", hour))
    assert first == {"put_if_absent": 1}
    assert (
        _total(await _cost(c, "claim (task held: refused)", lambda: b.claim_task("budget/1", "a", "v", hour)))
        == 2
    )
    assert _total(await _cost(c, "extend", lambda: b.extend_task_claim("budget/1", "a", "w", hour))) == 2
    claim = (await b.list_claims("budget/1"))[0]
    cost = await _cost(
        c, "save_task_result (with claim)", lambda: b.save_task_result("budget/1", "a", b"o", claim=claim)
    )
    assert _total(cost) == 4
    assert _total(await _cost(c, "release", lambda: b.release_task_claim("budget/1", "a", "w"))) == 2
    assert (
        _total(await _cost(c, "claim (after a release)", lambda: b.claim_task("budget/1", "a", "w", hour)))
        == 3
    )

    assert await _cost(c, "load (no blobs)", lambda: b.load_snapshot("budget/1")) == {"get": 1}
    loaded = await b.load_snapshot("budget/1")
    loaded.mark_task_completed("a", b"o")
    loaded.update_position(AtFork("f", ["b1", "b2"], []))
    cost = await _cost(c, "save (CAS, 0 -> 2 ready tasks)", lambda: b.save_snapshot(loaded))
    assert cost == {"get": 1, "put": 2, "put_if_version": 1}
    cost = await _cost(c, "save_task_result (no claim)", lambda: b.save_task_result("budget/1", "b1", b"x"))
    assert _total(cost) == 3
    assert _total(await _cost(c, "load_task_result", lambda: b.load_task_result("budget/1", "b1"))) == 1
    moving = WorkflowSnapshot("budget/moving", "flow", initial_input=b"in")
    moving.update_position(AtTask("x"))
    await b.save_snapshot(moving)
    moving.update_position(AtTask("y"))
    cost = await _cost(c, "save (CAS, ready task x -> y)", lambda: b.save_snapshot(moving))
    assert cost == {"get": 1, "put": 1, "put_if_version": 1, "delete": 1}

    big = WorkflowSnapshot("budget/blobs", "flow", initial_input=b"i" * 2000)
    big.update_position(AtFork("f", ["c1", "c2", "c3"], []))
    await b.save_snapshot(big)
    for task in ("c1", "c2"):
        await b.save_task_result("budget/blobs", task, task.encode() * 1000)
    assert await _cost(c, "load (3 blobs: input, 2 outputs)", lambda: b.load_snapshot("budget/blobs")) == {
        "get": 4
    }

    await b.request_cancellation("budget/1", "stop", "me")
    cost = await _cost(c, "check_and_cancel (pending request)", lambda: b.check_and_cancel("budget/1"))
    assert cost["get"] == 2 and cost["put_if_version"] == 1
    assert (
        _total(
            await _cost(c, "check_and_cancel (nothing pending)", lambda: b.check_and_cancel("budget/blobs"))
        )
        == 2
    )
    await _cost(c, "delete_snapshot (3 blobs)", lambda: b.delete_snapshot("budget/blobs"))
    await b.close()
    print(f"\n{store_target.name}:\n" + _table())


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
    # Claimed ready tasks are skipped, each at the cost of its claim GET.
    for task in await b.find_available_tasks("w", 5):
        await b.claim_task(task.instance_id, task.task_id, "other", timedelta(hours=1))
    label = f"find L=1 (first 5 of {READY} ready claimed, {idle} idle)"
    costs["find L=1, 5 claimed"] = Counter(await _cost(c, label, lambda: b.find_available_tasks("w", 1)))
    await b.close()
    return costs


def _check_find_costs(small: dict[str, Counter[str]], large: dict[str, Counter[str]]) -> None:
    assert small == large
    for limit in (1, 10):
        # One LIST page of the cancellation requests, one of the ready index; then per task
        # returned, its claim and its snapshot (ready entries do not change on claims).
        assert large[f"find L={limit}"] == Counter({"list": 2, "get": 2 * limit})
    # The first five ready tasks are claimed: each is skipped after its claim GET alone.
    assert large["find L=1, 5 claimed"] == Counter({"list": 2, "get": 5 + 2})


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
