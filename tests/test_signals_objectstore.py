"""Signals, delays and pause on object stores: what they cost a poll, and the inbox protocol.

The conformance suite (``WaitTests``) checks the behaviour on every backend; this pins what the
layout promises beyond it: a signal is one write; waiting work (a delay before its wake time, a
wait for a signal that has not come) costs a poll a listed key and no GET, like a leased task;
a buffered signal is absorbed once and then costs polls nothing; an inbox object absorbed twice,
or left over from a deleted incarnation, is never delivered twice. Run with ``-s`` for the table.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import orjson
import pytest

from objstore_wfp import AtDelay, AtSignal, AtTask, ManualClock, ObjectStoreBackend, WorkflowSnapshot
from objstore_wfp.backends import layout
from objstore_wfp.stores.counting import CountingStore
from tests.backends import StoreTarget, local_store_target, memory_store_target, store_target

__all__ = ["local_store_target", "memory_store_target", "store_target"]

pytestmark = pytest.mark.timeout(180)
HOUR = timedelta(hours=1)
TICK = timedelta(microseconds=1)
WAITING = 20  # instances that wait, the same in every measurement


async def _open(target: StoreTarget, clock: ManualClock) -> tuple[ObjectStoreBackend, CountingStore]:
    backend = target.backend_through(CountingStore, clock=clock)
    assert isinstance(backend.store, CountingStore)
    await backend.verify_store()
    await backend.list_snapshots()
    return backend, backend.store


def _snapshot(instance: str, position: AtTask | AtDelay | AtSignal) -> WorkflowSnapshot:
    snapshot = WorkflowSnapshot(instance, "flow", initial_input=b"in")
    snapshot.update_position(position)
    return snapshot


async def _poll_cost(
    backend: ObjectStoreBackend, counting: CountingStore
) -> tuple[dict[str, int], list[str]]:
    counting.reset()
    found = await backend.find_available_tasks("w", 10)
    return dict(counting.counts), [t.instance_id for t in found]


async def test_waiting_work_costs_a_poll_no_get(store_target: StoreTarget) -> None:
    clock = ManualClock()
    backend, counting = await _open(store_target, clock)
    for i in range(WAITING):
        # Distinct due times: a poll reads on through a tie at its limit.
        due = clock.now() + HOUR + 2 * i * TICK
        await backend.create_snapshot(_snapshot(f"delay/{i}", AtDelay("nap", due)))
        await backend.create_snapshot(_snapshot(f"timeout/{i}", AtSignal("s", "go", due + TICK)))
        await backend.create_snapshot(_snapshot(f"signal/{i}", AtSignal("s", "go")))
    cost, found = await _poll_cost(backend, counting)
    assert (cost, found) == ({"list": 1}, []), "waiting work must cost a poll its LIST only"
    clock.advance(2 * HOUR)
    cost, found = await _poll_cost(backend, counting)
    assert len(found) == 10 and cost == {"list": 1, "get": 10}, (cost, found)
    await backend.close()


async def test_a_signal_is_one_write(store_target: StoreTarget) -> None:
    clock = ManualClock()
    backend, counting = await _open(store_target, clock)
    await backend.create_snapshot(_snapshot("waits", AtSignal("s", "go")))
    await backend.create_snapshot(_snapshot("busy", AtTask("t")))
    assert await backend.claim_task("busy", "t", "w", HOUR) is not None
    counting.reset()
    await backend.send_signal("waits", "go", b"yes")
    assert counting.counts == {"get": 1, "put_if_absent": 1}, counting.counts
    counting.reset()
    await backend.send_signal("busy", "later", b"buffered")
    assert counting.counts == {"get": 1, "put_if_absent": 1}, counting.counts

    # The next poll absorbs both: a second LIST from after the inbox, each inbox object read,
    # one compare-and-swap per instance (the waiting one gets an entry due now), the inbox
    # objects deleted; it offers the woken step.
    cost, found = await _poll_cost(backend, counting)
    assert found == ["waits"], found
    assert cost["list"] == 2 and cost["put_if_version"] == 2 and cost["put"] == 1, cost
    assert cost["delete"] == 2, cost

    # Absorbed: later polls cost what they cost before the signals.
    cost, found = await _poll_cost(backend, counting)
    assert found == ["waits"] and cost == {"list": 1, "get": 1}, cost
    claim = await backend.claim_task("waits", "s", "w", HOUR)
    assert claim is not None
    assert await backend.deliver_signal(claim) == b"yes"
    cost, found = await _poll_cost(backend, counting)
    assert (cost, found) == ({"list": 1}, []), "a buffered signal costs polls nothing"
    await backend.close()


async def test_old_documents_without_signals_read(local_store_target: StoreTarget) -> None:
    """A snapshot written before issue 17 has no pause or signal fields: it reads as none."""
    clock = ManualClock()
    backend = local_store_target.backend(clock=clock)
    await backend.save_snapshot(_snapshot("old", AtTask("t")))
    store = local_store_target.store()
    key = layout.snapshot_key("old")
    found = await store.get(key)
    assert found is not None
    doc = orjson.loads(found.data)
    for name in ("pause", "signals", "signal_seq", "absorbed"):
        doc.pop(name, None)
    await store.put(key, orjson.dumps(doc))
    fresh = local_store_target.backend(clock=clock)
    assert await fresh.get_pause_request("old") is None
    assert await fresh.list_signals("old") == []
    assert [t.task_id for t in await fresh.find_available_tasks("w", 10)] == ["t"]
    sent = await fresh.send_signal("old", "go", b"x")
    assert sent.seq == 1 and await fresh.list_signals("old") == [sent]
    await fresh.pause_instance("old", "r", "me")
    assert await fresh.find_available_tasks("w", 10) == []
    await backend.close()
    await fresh.close()
    await store.close()


async def test_inbox_objects_count_once(memory_store_target: StoreTarget) -> None:
    """An inbox object met again after its absorption (a crash before its deletion) is not a
    new signal; one written late with a seq already given out is numbered after it; one of a
    deleted incarnation is dropped."""
    clock = ManualClock()
    backend = memory_store_target.backend(clock=clock)
    store = memory_store_target.store()
    await backend.save_snapshot(_snapshot("wf", AtSignal("s", "go")))
    first = await backend.send_signal("wf", "go", b"one")
    inbox = await store.get(layout.inbox_key("wf", first.seq))
    assert inbox is not None
    assert [t.task_id for t in await backend.find_available_tasks("w", 10)] == ["s"]
    assert await store.get(layout.inbox_key("wf", first.seq)) is None, "absorbed, not deleted"

    await store.put(layout.inbox_key("wf", first.seq), inbox.data)  # left over by a crash
    assert await backend.list_signals("wf") == [first]
    await backend.find_available_tasks("w", 10)
    assert await backend.list_signals("wf") == [first], "an inbox object counted twice"
    assert await store.get(layout.inbox_key("wf", first.seq)) is None

    late = orjson.loads(inbox.data)
    late.update(w="0123456789abcdef", payload="dHdv")  # "two", sent with a stale seq
    await store.put(layout.inbox_key("wf", first.seq), orjson.dumps(late))
    await backend.find_available_tasks("w", 10)
    listed = await backend.list_signals("wf")
    assert [(s.payload, s.seq) for s in listed] == [(b"one", first.seq), (b"two", first.seq + 1)], listed

    await backend.delete_snapshot("wf")
    await store.put(layout.inbox_key("wf", 99), inbox.data)  # a send that landed after the delete
    await backend.save_snapshot(_snapshot("wf", AtSignal("s", "go")))
    assert await backend.list_signals("wf") == []
    assert await backend.find_available_tasks("w", 10) == []
    assert await store.get(layout.inbox_key("wf", 99)) is None, "a dead incarnation's signal stayed"
    await backend.close()
    await store.close()


async def test_a_paused_instance_costs_polls_nothing(store_target: StoreTarget) -> None:
    clock = ManualClock()
    backend, counting = await _open(store_target, clock)
    for i in range(WAITING):
        await backend.create_snapshot(_snapshot(f"paused/{i}", AtTask("t")))
        await backend.pause_instance(f"paused/{i}", "maintenance", "ops")
    await backend.create_snapshot(_snapshot("running", AtTask("t")))
    claim = await backend.claim_task("running", "t", "w", HOUR)
    assert claim is not None
    counting.reset()
    await backend.pause_instance("running", "maintenance", "ops")
    # The ready task's entry moves to "never" around the one compare-and-swap (from the copy
    # this backend remembers).
    assert counting.counts == {"put": 1, "put_if_version": 1, "delete": 1}, counting.counts

    def advance(snapshot: WorkflowSnapshot) -> bool:
        snapshot.mark_task_completed("t", b"out")
        snapshot.update_position(AtTask("next"))
        return True

    _, chained = await backend.record_and_advance(claim, b"out", advance, reserve=HOUR)
    assert chained == []
    cost, found = await _poll_cost(backend, counting)
    assert (cost, found) == ({"list": 1}, []), "paused work must cost a poll its LIST only"

    counting.reset()
    await backend.resume_instance("running")
    assert counting.counts == {"put": 1, "put_if_version": 1, "delete": 1}, counting.counts
    cost, found = await _poll_cost(backend, counting)
    # Resumed entries are leased ones: a poll reads the snapshot and the claim.
    assert found == ["running"] and cost == {"list": 1, "get": 2}, cost
    await backend.close()


async def test_two_backends_race_signals(local_store_target: StoreTarget) -> None:
    """Across backends (separate caches): a signal sent while another backend's worker reaches
    the wait is delivered once; signals absorbed by two pollers at once count once each."""
    clock = ManualClock()
    sender, worker = local_store_target.backend(clock=clock), local_store_target.backend(clock=clock)

    def to_wait(snapshot: WorkflowSnapshot) -> bool:
        snapshot.mark_task_completed("t", b"out")
        snapshot.update_position(AtSignal("s", "go"))
        return True

    for i in range(6):
        await worker.create_snapshot(_snapshot(f"race/{i}", AtTask("t")))
        claim = await worker.claim_task(f"race/{i}", "t", "w", HOUR)
        assert claim is not None
        await asyncio.gather(
            sender.send_signal(f"race/{i}", "go", bytes([i])),
            worker.record_and_advance(claim, b"out", to_wait),
        )
    found = sorted(t.instance_id for t in await worker.find_available_tasks("w", 100))
    assert found == [f"race/{i}" for i in range(6)], found
    for i in range(6):
        step = await worker.claim_task(f"race/{i}", "s", "w", HOUR)
        assert step is not None and await worker.deliver_signal(step) == bytes([i])

    await worker.create_snapshot(_snapshot("many", AtTask("t")))
    sent = await asyncio.gather(*(sender.send_signal("many", "n", bytes([i])) for i in range(10)))
    await asyncio.gather(sender.find_available_tasks("a", 10), worker.find_available_tasks("b", 10))
    listed = await worker.list_signals("many")
    assert sorted(s.seq for s in listed) == sorted(s.seq for s in sent), listed
    assert sorted(s.payload for s in listed) == [bytes([i]) for i in range(10)]
    await sender.close()
    await worker.close()
