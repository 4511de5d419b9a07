"""SIGKILL a writer at every interleaving point of its writes, then check what it left.

A child process sets up some workflows, then runs a workload that exercises every kind of write
of layout 2 (create and create-only, CAS save, results inline and as blobs, claim with its entry
move, claim after release with its fence publication, renew, release, cancellation inside the
snapshot, delete, record-and-advance with a reserved next step and the claim of it, repair) and
kills itself with SIGKILL at a chosen point: before or after its N-th store request (every N,
on any store), or at its N-th file-system mutation on local disk (an ``os.write`` there writes half
its buffer first). Afterwards, from a fresh backend:

- every object under the root parses (snapshots load completely, blobs included): no torn object;
- ``find_available_tasks`` offers exactly the tasks the stored snapshots make dispatchable,
  *before* any repair: no ready entry is lost;
- ``repair()`` reports nothing unreadable, and a second run finds nothing left to mend;
- every surviving in-progress workflow can still be written (no lock left held).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from objstore_wfp import InProgress, ObjectStoreBackend
from objstore_wfp.backends import layout
from objstore_wfp.backends.objectstore import RepairReport
from objstore_wfp.backends.objectstore.ready import epoch_us, slot_due_us
from objstore_wfp.clock import ManualClock
from objstore_wfp.model.codec import loads, open_envelope
from objstore_wfp.stores.base import ConditionalStore
from tests import procs
from tests.backends import StoreTarget, local_store_target, store_target

__all__ = ["local_store_target", "store_target"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

#: Children killed at the same time (each on its own root).
PARALLEL = 6
#: File-system kill points tried on local disk (spread evenly over all of them).
OS_POINTS = 32

TRIED: dict[str, int] = {}


async def _points(target: StoreTarget, template: StoreTarget, level: str, out: str) -> int:
    await target.copy_from(template)
    codes = procs.run_all(procs.crash_worker, [(target.url, target.options, level, "before", None, out)])
    assert codes == [0], f"the workload failed without any crash: exit {codes}"
    points: int = procs.read_json(out)["points"]
    return points


async def _kill_all(
    target: StoreTarget, template: StoreTarget, tmp: str, level: str, when: str, points: list[int]
) -> list[StoreTarget]:
    """Run one child per kill point, each on its own copy of ``template``; return the roots."""
    roots = []
    for start in range(0, len(points), PARALLEL):
        batch = points[start : start + PARALLEL]
        these = [target.child(f"{level}-{when}-{n}") for n in batch]
        for root in these:
            await root.copy_from(template)
        codes = procs.run_all(
            procs.crash_worker,
            [
                (t.url, t.options, level, when, n, f"{tmp}/{level}-{when}-{n}.json")
                for t, n in zip(these, batch, strict=True)
            ],
        )
        for n, code in zip(batch, codes, strict=True):
            assert code == -9, f"kill point {n} ({level}, {when}): the child exited with {code}"
        roots += these
    return roots


async def _expected_tasks(
    backend: ObjectStoreBackend, store: ConditionalStore, now: datetime
) -> dict[tuple[str, str], bytes | None]:
    """What the stored snapshots make dispatchable, computed without the ready index: ready
    tasks without a live claim, but for one a record-and-advance reserved for its writer (it
    claims it next: a crash in between leaves it out of polls until the reservation ends, as a
    crash after the claim would until the lease ends). Only the snapshot's ``ready`` slot says
    which task is reserved."""
    live = {(c.instance_id, c.task_id) for c in await backend.list_claims() if not c.is_expired(now)}
    now_us = epoch_us(now)
    expected = {}
    for instance in await backend.list_snapshots():
        snap = await backend.load_snapshot(instance)
        if not isinstance(snap.state, InProgress) or await backend.get_cancellation_request(instance):
            continue
        found = await store.get(layout.snapshot_key(layout.encode_id(instance)))
        assert found is not None
        slots: dict[str, str] = loads(found.data, instance)["ready"]
        for task in snap.available_task_ids():
            slot = slots[task]
            reserved = layout.slot_kind(slot) == layout.LEASED and slot_due_us(slot) > now_us
            if (instance, task) not in live and not reserved:
                expected[(instance, task)] = snap.task_input()
    return expected


async def _check_root(target: StoreTarget, label: str) -> None:
    store = target.store()
    backend = target.backend(inline_limit=procs.CRASH_INLINE_LIMIT)
    try:
        # 1. Every object parses.
        for obj in [o async for o in store.list("")]:
            key = obj.key
            found = await store.get(key)
            assert found is not None, f"{label}: {key} listed but gone"
            if key.startswith(layout.SNAPSHOTS):
                instance = layout.instance_from_snapshot_key(key)
                assert instance is not None, f"{label}: foreign snapshot key {key}"
                decoded = layout.decode_id(instance)
                assert decoded is not None
                await backend.load_snapshot(decoded)
            elif key.startswith(layout.READY):
                assert layout.parse_ready_key(key) is not None, f"{label}: bad ready key {key}"
                open_envelope(loads(found.data, key), "ready", key)
            elif key.startswith(layout.CLAIMS):
                open_envelope(loads(found.data, key), "claim", key)
            elif key == layout.MARKER:
                assert loads(found.data, key)["layout"] == layout.LAYOUT_VERSION
            else:
                assert key.startswith(layout.BLOBS), f"{label}: unexpected object {key}"
        # 2. Nothing held is offered now, and nothing dispatchable is lost, before any repair: a
        # crash between a claim's entry move and its write hides the task until the entry falls
        # due (as if the claimer had died holding it), so "lost" is judged once every lease has
        # run out, by a backend whose clock is two days on.
        now = datetime.now(timezone.utc)
        hidden = {
            (layout.decode_id(e.instance), layout.decode_id(e.task))
            for e in [layout.parse_ready_key(o.key) async for o in store.list(layout.READY)]
            if e is not None and e.leased and e.due_us > epoch_us(now)
        }
        expected = await _expected_tasks(backend, store, now)
        offered_now = offered = {
            (t.instance_id, t.task_id): t.input for t in await backend.find_available_tasks("check", 100)
        }
        extra, missing = sorted(offered.keys() - expected.keys()), sorted(expected.keys() - offered.keys())
        assert not extra and set(missing) <= hidden, (
            f"{label}: find_available_tasks disagrees with the snapshots: offers {extra} too many, "
            f"{missing} too few (hidden by a leased entry: {sorted(hidden)})"
        )
        later = now + timedelta(days=2)
        async with target.backend(inline_limit=procs.CRASH_INLINE_LIMIT, clock=ManualClock(later)) as future:
            expected = await _expected_tasks(future, store, later)
            offered = {
                (t.instance_id, t.task_id): t.input for t in await future.find_available_tasks("check", 100)
            }
        extra, missing = sorted(offered.keys() - expected.keys()), sorted(expected.keys() - offered.keys())
        assert offered == expected, (
            f"{label}: once every lease has run out, find_available_tasks offers {extra} too many, "
            f"{missing} too few"
        )
        # 3. Repair mends everything in one run.
        report = await backend.repair(grace=timedelta(0))
        assert report.unreadable == [], f"{label}: {report}"
        again = await backend.repair(grace=timedelta(0))
        assert again == RepairReport(instances=again.instances), f"{label}: second repair {again}"
        offered = {
            (t.instance_id, t.task_id): t.input for t in await backend.find_available_tasks("check", 100)
        }
        assert offered == offered_now, f"{label}: repair changed what is offered"
        # 4. Nothing is stuck: every in-progress workflow can still be saved by compare-and-swap.
        for instance in await backend.list_snapshots():
            snap = await backend.load_snapshot(instance)
            if isinstance(snap.state, InProgress):
                await backend.save_snapshot(snap)
    finally:
        await backend.close()
        await store.close()


async def _crash_everywhere(target: StoreTarget, tmp: str, level: str, plan: dict[str, int | None]) -> int:
    """Kill at the points of ``plan`` (``when`` -> how many, spread evenly; ``None``: every one);
    return how many kills were tried."""
    template = target.child(f"template-{level}")
    async with template.backend(inline_limit=procs.CRASH_INLINE_LIMIT) as backend:
        await procs.crash_setup(backend)  # type: ignore[arg-type]
    total = await _points(target.child(f"count-{level}"), template, level, f"{tmp}/count-{level}.json")
    tried = 0
    failed: list[str] = []
    for when, most in plan.items():
        stride = 1 if most is None else -(-total // most)
        for root in await _kill_all(target, template, tmp, level, when, list(range(1, total + 1, stride))):
            # Every kill point is checked, and all that fail are reported together: which points
            # fail says which write of the sequence leaves the store wrong.
            try:
                await _check_root(root, root.url)
            except AssertionError as exc:
                failed.append(str(exc).splitlines()[0])
            tried += 1
    TRIED[level] = tried
    print(f"\n{level}-level crash points: {total} in the workload, {tried} kills tried {plan}")
    assert not failed, f"{len(failed)} of {tried} kill points:\n" + "\n".join(failed)
    return tried


async def test_crash_at_every_store_request(store_target: StoreTarget, tmp_path: Any) -> None:
    if not store_target.shared_between_processes:
        pytest.skip("the store is private to each process")
    # Dying after request N differs from dying before request N+1 only where requests overlap.
    tried = await _crash_everywhere(store_target, str(tmp_path), "store", {"before": None, "after": 12})
    assert tried >= 60


async def test_crash_at_file_system_mutations(store_target: StoreTarget, tmp_path: Any) -> None:
    if store_target.local_root is None:
        pytest.skip("file-system kill points exist on local disk only")
    tried = await _crash_everywhere(store_target, str(tmp_path), "os", {"before": OS_POINTS})
    assert tried >= 30
