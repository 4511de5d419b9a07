"""Hostile content under the root: corrupt, foreign, empty, truncated, misplaced objects.

Each case plants one kind of damage next to healthy workflows. The damaged object must give a
typed error that names it (``SerializationError`` for bytes that do not decode), and the healthy
workflows must keep working through every operation: load, list, find, claim, record, save,
cancel, repair.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import orjson
import pytest

from objstore_wfp import AtFork, AtTask, ObjectStoreBackend, WorkflowSnapshot
from objstore_wfp.backends import layout
from objstore_wfp.errors import BackendError, NotFoundError, SerializationError
from objstore_wfp.stores.base import ConditionalStore
from tests.backends import StoreTarget, local_store_target, store_target

__all__ = ["local_store_target", "store_target"]

pytestmark = pytest.mark.timeout(60)

INLINE = 16  # small, so inputs and outputs live in blob objects that can be damaged too
VICTIM = "victim"
V = layout.encode_id(VICTIM)
SNAP_KEY = layout.snapshot_key(V)
CLAIM_KEY = layout.claim_key(V, "v")
GOOD_TASKS = {("good/1", "a"), ("good two", "b2")}
BIG = b"x" * 100


class World:
    def __init__(self, target: StoreTarget) -> None:
        self.target = target
        self.backend: ObjectStoreBackend = target.backend(inline_limit=INLINE)
        self.store: ConditionalStore = target.store()

    async def build(self) -> None:
        b = self.backend
        one = WorkflowSnapshot("good/1", "flow", initial_input=b"in one")
        one.update_position(AtTask("a"))
        await b.save_snapshot(one)
        two = WorkflowSnapshot("good two", "flow", initial_input=BIG)
        two.update_position(AtFork("f", ["b1", "b2"], []))
        await b.save_snapshot(two)
        await b.save_task_result("good two", "b1", BIG + b"b1")
        victim = WorkflowSnapshot(VICTIM, "flow", initial_input=BIG + b"victim")
        victim.update_position(AtTask("v"))
        await b.save_snapshot(victim)
        claim = await b.claim_task(VICTIM, "v", "w", timedelta(minutes=5))
        await b.save_task_result(VICTIM, "v", BIG + b"v", claim=claim)
        victim = await b.load_snapshot(VICTIM)
        victim.update_position(AtTask("v2"))
        await b.save_snapshot(victim)
        await b.request_cancellation(VICTIM, "stop", "tester")

    async def raw(self, key: str) -> bytes:
        found = await self.store.get(key)
        assert found is not None, key
        return found.data

    async def plant(self, key: str, data: bytes) -> None:
        await self.store.put(key, data)

    async def doc(self, key: str) -> dict[str, Any]:
        value: dict[str, Any] = orjson.loads(await self.raw(key))
        return value

    async def victim_blob(self) -> str:
        doc = await self.doc(SNAP_KEY)
        return str(doc["results"]["v"]["blob"])

    async def close(self) -> None:
        await self.backend.close()
        await self.store.close()

    async def others_keep_working(self, *, unreadable: set[str]) -> None:
        """Everything about the healthy workflows still works."""
        b = self.backend
        one = await b.load_snapshot("good/1")
        assert one.initial_input == b"in one" and one.position == AtTask("a")
        two = await b.load_snapshot("good two")
        assert two.initial_input == BIG and two.completed_tasks["b1"].output == BIG + b"b1"
        assert {"good/1", "good two"} <= set(await b.list_snapshots())
        found = {(t.instance_id, t.task_id): t.input for t in await b.find_available_tasks("w", 50)}
        assert {k for k in found if k[0] != VICTIM} == GOOD_TASKS
        assert found[("good two", "b2")] == BIG
        claim = await b.claim_task("good/1", "a", "w", timedelta(minutes=1))
        assert claim is not None
        await b.save_task_result("good/1", "a", b"done", claim=claim)
        await b.release_task_claim("good/1", "a", "w")
        one = await b.load_snapshot("good/1")
        one.mark_task_completed("a", b"done")
        one.update_position(AtTask("a2"))
        await b.save_snapshot(one)
        await b.request_cancellation("good two", "r", "tester")
        assert await b.check_and_cancel("good two", "b2") is True
        report = await b.repair()
        assert set(report.unreadable) <= unreadable
        found_after = {(t.instance_id, t.task_id) for t in await b.find_available_tasks("w", 50)}
        assert {k for k in found_after if k[0] != VICTIM} == {("good/1", "a2")}
        assert (await b.load_snapshot("good/1")).completed_tasks["a"].output == b"done"


@pytest.fixture
async def world(store_target: StoreTarget) -> Any:
    w = World(store_target)
    await w.build()
    yield w
    await w.close()


async def _raises_naming(
    call: Callable[[], Awaitable[Any]], name: str, kind: type[Exception] = SerializationError
) -> str:
    with pytest.raises(kind) as info:
        await call()
    assert name in str(info.value), f"{info.value!r} does not name {name}"
    return str(info.value)


async def _valid_snapshot_bytes(w: World, **changes: Any) -> bytes:
    doc = await w.doc(SNAP_KEY)
    doc.update(changes)
    return orjson.dumps(doc)


SNAPSHOT_DAMAGE: dict[str, Callable[[World], Awaitable[bytes]]] = {
    "corrupt json": lambda w: _const(b'{"format": 1, "kind": "snapshot", '),
    "empty": lambda w: _const(b""),
    "binary": lambda w: _const(b"\xff\xfe\x00garbage\x80"),
    "json array": lambda w: _const(b"[1, 2, 3]"),
    "json string": lambda w: _const(b'"snapshot"'),
    "deeply nested": lambda w: _const(b"[" * 5000 + b"]" * 5000),
    "truncated": lambda w: _truncated(w),
    "unknown format version": lambda w: _valid_snapshot_bytes(w, format=99),
    "missing format": lambda w: _without(w, "format"),
    "wrong kind": lambda w: _valid_snapshot_bytes(w, kind="claim"),
    "results not an object": lambda w: _valid_snapshot_bytes(w, results="everything"),
    "result of a wrong type": lambda w: _valid_snapshot_bytes(w, results={"v": 7}),
    "ready of a wrong type": lambda w: _valid_snapshot_bytes(w, ready={"v2": 1}),
    "fences of a wrong type": lambda w: _valid_snapshot_bytes(w, fences={"v": "1"}),
    "fence a boolean": lambda w: _valid_snapshot_bytes(w, fences={"v": True}),
    "incarnation missing": lambda w: _without(w, "incarnation"),
    "incarnation a number": lambda w: _valid_snapshot_bytes(w, incarnation=7),
    "priority a string": lambda w: _valid_snapshot_bytes(w, priority="high"),
    "state missing": lambda w: _without(w, "state"),
    "state of an unknown type": lambda w: _valid_snapshot_bytes(w, state={"type": "exploded"}),
    "illegal instance id": lambda w: _valid_snapshot_bytes(w, instance_id="bad\x00id"),
    "timestamp garbage": lambda w: _valid_snapshot_bytes(w, created_at="yesterday"),
    "initial input not base64": lambda w: _valid_snapshot_bytes(w, initial_input="!!not base64!!"),
    "another instance's snapshot": lambda w: w.raw(layout.snapshot_key(layout.encode_id("good/1"))),
}


async def _const(data: bytes) -> bytes:
    return data


async def _truncated(w: World) -> bytes:
    data = await w.raw(SNAP_KEY)
    return data[: len(data) // 2]


async def _without(w: World, field: str) -> bytes:
    doc = await w.doc(SNAP_KEY)
    del doc[field]
    return orjson.dumps(doc)


#: Damage deep inside an otherwise sound snapshot: only the operations that decode that field
#: (a full load) must refuse it; the others may go on working on the sound parts.
DEEP = {"timestamp garbage", "initial input not base64", "state of an unknown type"}


async def _refused_or_works(call: Callable[[], Awaitable[Any]], name: str) -> None:
    try:
        await call()
    except SerializationError as exc:
        assert name in str(exc), f"{exc!r} does not name {name}"


@pytest.mark.parametrize("damage", list(SNAPSHOT_DAMAGE))
async def test_damaged_snapshot(world: World, damage: str) -> None:
    await world.plant(SNAP_KEY, await SNAPSHOT_DAMAGE[damage](world))
    b = world.backend
    await _raises_naming(lambda: b.load_snapshot(VICTIM), SNAP_KEY)
    others = [
        lambda: b.load_task_result(VICTIM, "v"),
        lambda: b.save_task_result(VICTIM, "v2", b"out"),
        lambda: b.request_cancellation(VICTIM, "r", "t"),
        lambda: b.check_and_cancel(VICTIM),
    ]
    for call in others:
        if damage in DEEP:
            await _refused_or_works(call, SNAP_KEY)
        else:
            await _raises_naming(call, SNAP_KEY)
    assert VICTIM in await b.list_snapshots()  # its key is ours; its content is not readable
    await world.others_keep_working(unreadable={SNAP_KEY})
    # The damaged object is left alone for a human to inspect; deleting it works.
    report = await b.repair()
    assert report.unreadable == ([] if damage in DEEP else [SNAP_KEY])
    await _raises_naming(lambda: b.load_snapshot(VICTIM), SNAP_KEY)
    await b.delete_snapshot(VICTIM)
    with pytest.raises(NotFoundError):
        await b.load_snapshot(VICTIM)
    assert VICTIM not in await b.list_snapshots()


async def test_blob_with_wrong_digest(world: World) -> None:
    blob = await world.victim_blob()
    await world.plant(blob, BIG + b"tampered")
    await _raises_naming(lambda: world.backend.load_snapshot(VICTIM), blob)
    await _raises_naming(lambda: world.backend.load_task_result(VICTIM, "v"), blob)
    await world.others_keep_working(unreadable=set())


async def test_blob_missing(world: World) -> None:
    blob = await world.victim_blob()
    await world.store.delete(blob)
    await _raises_naming(lambda: world.backend.load_snapshot(VICTIM), blob)
    await world.others_keep_working(unreadable=set())


@pytest.mark.parametrize(
    "data", [b"", b"{", b'{"format": 2, "kind": "claim"}', b'{"format": 1, "kind": "snapshot"}', b"[]"]
)
async def test_damaged_claim(world: World, data: bytes) -> None:
    await world.plant(CLAIM_KEY, data)
    b = world.backend
    await _raises_naming(lambda: b.claim_task(VICTIM, "v", "w2", timedelta(seconds=5)), CLAIM_KEY)
    await _raises_naming(lambda: b.release_task_claim(VICTIM, "v", "w"), CLAIM_KEY)
    await _raises_naming(lambda: b.extend_task_claim(VICTIM, "v", "w", timedelta(seconds=5)), CLAIM_KEY)
    assert all(c.instance_id != VICTIM for c in await b.list_claims())
    await world.others_keep_working(unreadable=set())


#: A damaged cancellation request: it lives in the snapshot (layout 2 has no ``cancels/``).
CANCEL_DAMAGE: list[object] = ["", "nonsense", 7, [], {}, {"format": 7, "kind": "cancellation"}]


@pytest.mark.parametrize("cancel", CANCEL_DAMAGE, ids=repr)
async def test_damaged_cancellation_request(world: World, cancel: object) -> None:
    await world.plant(SNAP_KEY, await _valid_snapshot_bytes(world, cancel=cancel))
    b = world.backend
    await _raises_naming(lambda: b.get_cancellation_request(VICTIM), SNAP_KEY)
    await _raises_naming(lambda: b.check_and_cancel(VICTIM), SNAP_KEY)
    # Layout 1 cleared a damaged request without reading it (its own object); now it is part
    # of the snapshot, whose compare-and-swap needs the snapshot read: clearing is refused with
    # the same typed error, and the way out is deleting the instance (below).
    await _raises_naming(lambda: b.clear_cancellation_request(VICTIM), SNAP_KEY)
    await world.others_keep_working(unreadable={SNAP_KEY})
    assert (await b.repair()).unreadable == [SNAP_KEY]
    await b.delete_snapshot(VICTIM)
    assert await b.get_cancellation_request(VICTIM) is None
    assert VICTIM not in await b.list_snapshots()


FOREIGN = {
    "snapshots/README.txt": b"hello",
    "snapshots/UPPER.json": b'{"format": 1}',
    "snapshots/nested/deeper.json": b"{}",
    "snapshots/.json": b"{}",
    "ready/garbage": b"x",
    "ready/3/notanumber/x/y": b"",
    "ready/9/0000000000000.00/x/y": b"",
    "ready/1/0000000000000.00/" + V + "/v2": b"not even json",
    "ready/1/0000000000000.00/ghost/t": layout.READY.encode(),
    # Keys of layout 2's ready index (content is never read: an entry is its key).
    "ready/1/0000000000000000.r00/" + V + "/v2": b"not even json",
    "ready/1/0000000000000000.l00/" + V + "/v": b"",
    "ready/1/0000000000000000.r00/ghost/t": b"",
    "ready/6/0000000000000000.r00/ghost/t": b"",
    "ready/1/0000000000000000.x00/ghost/t": b"",
    "claims/README": b"x",
    "claims/" + V + "/notes.txt": b"x",
    "claims/ghost/t.json": b"{",
    # Layout 1's cancellation requests: foreign to layout 2.
    "cancels/notes.txt": b"x",
    "cancels/ghost.json": b"{",
    "cancels/" + V + ".json": b"{",
    "blobs/stray": b"x",
    "blobs/ghost/0.bin": b"x",
    "README.md": b"# not a store",
    "unknown/prefix/object": b"x",
}


async def test_foreign_objects_everywhere(world: World) -> None:
    for key, data in FOREIGN.items():
        await world.plant(key, data)
    b = world.backend
    assert set(await b.list_snapshots()) == {"good/1", "good two", VICTIM}
    await world.others_keep_working(unreadable={"snapshots/UPPER.json"})
    # The victim is healthy, only cancelled-pending; every one of its operations still works.
    assert (await b.load_snapshot(VICTIM)).position == AtTask("v2")
    assert await b.check_and_cancel(VICTIM) is True


async def test_directory_where_an_object_is_expected(world: World) -> None:
    root = world.target.local_root
    if root is None:
        pytest.skip("only a file system has directories")
    other = WorkflowSnapshot("dir victim", "flow")
    other.update_position(AtTask("d"))
    dir_key = layout.snapshot_key(layout.encode_id("dir victim"))
    (root / dir_key).mkdir(parents=True)
    (root / dir_key / "inside").write_bytes(b"x")
    (root / layout.CLAIMS / layout.encode_id("dir victim")).mkdir(parents=True)
    (root / layout.claim_key(layout.encode_id("dir victim"), "d")).mkdir()
    (root / layout.READY / "2").mkdir(parents=True)
    (root / layout.READY / "2" / "0000000000000.00").write_bytes(b"a file where a directory is")
    b = world.backend
    with pytest.raises(NotFoundError):  # a directory is no object (as on object stores)
        await b.load_snapshot("dir victim")
    started = time.monotonic()
    # Writing where a directory is fails at once with a typed error, not after a long retry.
    await _raises_naming(lambda: b.save_snapshot(other), dir_key, BackendError)
    await _raises_naming(
        lambda: b.claim_task("dir victim", "d", "w", None), layout.encode_id("dir victim"), BackendError
    )
    assert time.monotonic() - started < 30
    assert "dir victim" not in await b.list_snapshots()
    await world.others_keep_working(unreadable=set())
