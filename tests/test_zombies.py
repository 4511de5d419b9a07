"""Zombie fencing: a worker whose claim expired and was taken over keeps writing.

None of its writes may overwrite what the new holder wrote: results, claims, snapshots. The
single-process tests share one ``ManualClock`` between the zombie's and the new holder's
backends and step the takeover in between the zombie's own store requests, at every point where
it matters; the last test does the same with two real processes and real short TTLs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest

from objstore_wfp import AtTask, ManualClock, TaskClaim, WorkflowSnapshot
from objstore_wfp.backends import layout
from objstore_wfp.errors import ClaimLostError, ConflictError
from objstore_wfp.stores.base import ConditionalStore, ListedObject, StoredObject
from tests import procs
from tests.backends import StoreTarget, local_store_target, store_target

__all__ = ["local_store_target", "store_target"]

pytestmark = pytest.mark.timeout(120)

INSTANCE = "zombie/instance"
TASK = "work"
TTL = timedelta(seconds=10)

Hook = Callable[[], Awaitable[None]]


class HookStore(ConditionalStore):
    """Forwards to ``inner``; runs one-shot hooks right before or right after a matching request."""

    def __init__(self, inner: ConditionalStore) -> None:
        self.inner = inner
        self.supports_conditional_delete = inner.supports_conditional_delete
        self._pending: list[tuple[str, str, Hook]] = []
        self.fired = 0

    def after(self, op: str, key: str, hook: Hook) -> None:
        self._pending.append((f"after {op}", key, hook))

    def before(self, op: str, key: str, hook: Hook) -> None:
        self._pending.append((f"before {op}", key, hook))

    async def _fire(self, op: str, key: str) -> None:
        for entry in self._pending:
            if entry[0] == op and entry[1] == key:
                self._pending.remove(entry)
                self.fired += 1
                await entry[2]()
                return

    @property
    def url(self) -> str:
        return self.inner.url

    async def get(self, key: str) -> StoredObject | None:
        await self._fire("before get", key)
        found = await self.inner.get(key)
        await self._fire("after get", key)
        return found

    async def put(self, key: str, data: bytes) -> str:
        return await self.inner.put(key, data)

    async def put_if_absent(self, key: str, data: bytes) -> str | None:
        return await self.inner.put_if_absent(key, data)

    async def put_if_version(self, key: str, data: bytes, version: str) -> str | None:
        return await self.inner.put_if_version(key, data, version)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def delete_if_version(self, key: str, version: str) -> bool:
        return await self.inner.delete_if_version(key, version)

    async def list(self, prefix: str, *, start_after: str | None = None) -> AsyncIterator[ListedObject]:
        await self._fire("before list", prefix)
        async for item in self.inner.list(prefix, start_after=start_after):
            yield item

    async def close(self) -> None:
        await self.inner.close()


CLAIM_KEY = layout.claim_key(layout.encode_id(INSTANCE), layout.encode_id(TASK))
SNAPSHOT_KEY = layout.snapshot_key(layout.encode_id(INSTANCE))


class Scene:
    """A zombie and a new holder on one root, sharing one manual clock."""

    def __init__(self, target: StoreTarget) -> None:
        self.clock = ManualClock()
        self.zombie_backend = target.backend(clock=self.clock)
        self.hooks = HookStore(self.zombie_backend.store)
        self.zombie_backend.store = self.hooks
        self.holder_backend = target.backend(clock=self.clock)
        self.zombie_claim: TaskClaim | None = None
        self.holder_claim: TaskClaim | None = None

    async def start(self) -> None:
        snap = WorkflowSnapshot(INSTANCE, "flow", initial_input=b"in")
        snap.update_position(AtTask(TASK))
        await self.holder_backend.save_snapshot(snap)
        self.zombie_claim = await self.zombie_backend.claim_task(INSTANCE, TASK, "zombie", TTL)
        assert self.zombie_claim is not None and self.zombie_claim.token == 1

    async def take_over(self, *, write_result: bool) -> None:
        """The zombie's lease runs out; the new holder claims and (optionally) records its result."""
        self.clock.advance(TTL + timedelta(seconds=1))
        self.holder_claim = await self.holder_backend.claim_task(INSTANCE, TASK, "holder", TTL)
        assert self.holder_claim is not None and self.holder_claim.token == 2
        if write_result:
            await self.holder_backend.save_task_result(
                INSTANCE, TASK, b"holder output", claim=self.holder_claim
            )

    async def close(self) -> None:
        await self.zombie_backend.close()
        await self.holder_backend.close()

    async def assert_holder_intact(self, *, result: bytes | None) -> None:
        claims = await self.holder_backend.list_claims(INSTANCE)
        assert [(c.worker_id, c.token) for c in claims] == [("holder", 2)]
        assert self.holder_claim is not None
        assert claims[0].expires_at is not None
        assert claims[0].expires_at >= self.holder_claim.expires_at  # type: ignore[operator]
        assert await self.holder_backend.load_task_result(INSTANCE, TASK) == result


@pytest.fixture
async def scene(store_target: StoreTarget) -> AsyncIterator[Scene]:
    s = Scene(store_target)
    await s.start()
    yield s
    await s.close()


async def test_every_write_of_a_taken_over_worker_fails(scene: Scene) -> None:
    stale = await scene.zombie_backend.load_snapshot(INSTANCE)
    await scene.take_over(write_result=True)
    fresh = await scene.holder_backend.load_snapshot(INSTANCE)
    fresh.update_position(AtTask("next"))
    await scene.holder_backend.save_snapshot(fresh)
    await scene.holder_backend.extend_task_claim(INSTANCE, TASK, "holder", TTL * 3)
    scene.holder_claim = (await scene.holder_backend.list_claims(INSTANCE))[0]
    z = scene.zombie_backend
    assert scene.zombie_claim is not None

    with pytest.raises(ClaimLostError):
        await z.save_task_result(INSTANCE, TASK, b"zombie output", claim=scene.zombie_claim)
    with pytest.raises(ConflictError):  # ignoring its claim does not help: the first result wins
        await z.save_task_result(INSTANCE, TASK, b"zombie output")
    with pytest.raises(ClaimLostError):
        await z.extend_task_claim(INSTANCE, TASK, "zombie", TTL)
    with pytest.raises(ClaimLostError):
        await z.release_task_claim(INSTANCE, TASK, "zombie")
    assert await z.claim_task(INSTANCE, TASK, "zombie", TTL) is None
    stale.mark_task_completed(TASK, b"zombie output")
    stale.update_position(AtTask("zombie next"))
    with pytest.raises(ConflictError):
        await z.save_snapshot(stale)
    # Even a version-less save (create-or-overwrite) cannot replace the recorded result.
    stale.version = None
    with pytest.raises(ConflictError):
        await z.save_snapshot(stale)

    await scene.assert_holder_intact(result=b"holder output")
    loaded = await scene.holder_backend.load_snapshot(INSTANCE)
    assert loaded.version == fresh.version
    assert loaded.position == AtTask("next")


async def test_result_claim_read_then_takeover_and_new_result(scene: Scene) -> None:
    # The zombie has read its claim; before it judges it, the lease runs out and the new holder
    # records its result.
    scene.hooks.after("get", CLAIM_KEY, lambda: scene.take_over(write_result=True))
    assert scene.zombie_claim is not None
    with pytest.raises(ClaimLostError):
        await scene.zombie_backend.save_task_result(
            INSTANCE, TASK, b"zombie output", claim=scene.zombie_claim
        )
    assert scene.hooks.fired == 1
    await scene.assert_holder_intact(result=b"holder output")


async def test_result_check_passes_then_takeover_and_new_result(scene: Scene) -> None:
    # The zombie's claim check found its claim live; before it reads the snapshot, the lease
    # runs out and the new holder records its result: the zombie finds a result already there.
    scene.hooks.before("get", SNAPSHOT_KEY, lambda: scene.take_over(write_result=True))
    assert scene.zombie_claim is not None
    with pytest.raises(ConflictError):
        await scene.zombie_backend.save_task_result(
            INSTANCE, TASK, b"zombie output", claim=scene.zombie_claim
        )
    assert scene.hooks.fired == 1
    await scene.assert_holder_intact(result=b"holder output")


async def test_result_snapshot_read_then_takeover_and_new_result(scene: Scene) -> None:
    # The zombie passed its check and read the snapshot; the new holder's result moves the
    # snapshot, so the zombie's compare-and-swap fails and its retry re-checks the claim.
    scene.hooks.after("get", SNAPSHOT_KEY, lambda: scene.take_over(write_result=True))
    assert scene.zombie_claim is not None
    with pytest.raises(ClaimLostError):
        await scene.zombie_backend.save_task_result(
            INSTANCE, TASK, b"zombie output", claim=scene.zombie_claim
        )
    assert scene.hooks.fired == 1
    await scene.assert_holder_intact(result=b"holder output")


async def test_result_in_flight_during_takeover_records_at_most_one_output(scene: Scene) -> None:
    # The limit of leases without a fenced data store: a write already past its checks when the
    # lease runs out lands, but only because nothing newer is there. The new holder then learns
    # of it (ConflictError) instead of overwriting it, and exactly one output is recorded.
    scene.hooks.after("get", SNAPSHOT_KEY, lambda: scene.take_over(write_result=False))
    assert scene.zombie_claim is not None
    await scene.zombie_backend.save_task_result(INSTANCE, TASK, b"zombie output", claim=scene.zombie_claim)
    assert scene.hooks.fired == 1
    with pytest.raises(ConflictError):
        await scene.holder_backend.save_task_result(
            INSTANCE, TASK, b"holder output", claim=scene.holder_claim
        )
    await scene.assert_holder_intact(result=b"zombie output")


@pytest.mark.parametrize("operation", ["extend", "release"])
async def test_renewal_or_release_racing_the_takeover(scene: Scene, operation: str) -> None:
    # The zombie read its own (expired, not yet taken over) claim; the takeover lands before its
    # compare-and-swap, which must then fail rather than revive or free the new holder's claim.
    scene.hooks.after("get", CLAIM_KEY, lambda: scene.take_over(write_result=False))
    z = scene.zombie_backend
    scene.clock.advance(TTL)  # expired, but nobody has taken over yet when the zombie reads
    with pytest.raises(ClaimLostError):
        if operation == "extend":
            await z.extend_task_claim(INSTANCE, TASK, "zombie", TTL * 10)
        else:
            await z.release_task_claim(INSTANCE, TASK, "zombie")
    assert scene.hooks.fired == 1
    await scene.assert_holder_intact(result=None)
    assert await z.claim_task(INSTANCE, TASK, "third", TTL) is None


async def test_reclaim_racing_the_takeover(scene: Scene) -> None:
    # Both read the same expired claim; the new holder's compare-and-swap lands first.
    scene.clock.advance(TTL)
    scene.hooks.after("get", CLAIM_KEY, lambda: scene.take_over(write_result=False))
    assert await scene.zombie_backend.claim_task(INSTANCE, TASK, "zombie", TTL) is None
    assert scene.hooks.fired == 1
    await scene.assert_holder_intact(result=None)


async def test_stale_snapshot_save_racing_the_new_holder(scene: Scene) -> None:
    stale = await scene.zombie_backend.load_snapshot(INSTANCE)
    stale.update_position(AtTask("zombie next"))

    async def new_holder_moves_on() -> None:
        await scene.take_over(write_result=True)
        fresh = await scene.holder_backend.load_snapshot(INSTANCE)
        fresh.update_position(AtTask("next"))
        await scene.holder_backend.save_snapshot(fresh)

    scene.hooks.after("get", SNAPSHOT_KEY, new_holder_moves_on)
    with pytest.raises(ConflictError):
        await scene.zombie_backend.save_snapshot(stale)
    assert scene.hooks.fired == 1
    await scene.assert_holder_intact(result=b"holder output")
    loaded = await scene.holder_backend.load_snapshot(INSTANCE)
    assert loaded.position == AtTask("next")
    # The zombie's failed save left no ready entry behind: only the holder's task is offered.
    found = await scene.holder_backend.find_available_tasks("w", 10)
    assert [(t.instance_id, t.task_id) for t in found] == [(INSTANCE, "next")]
    store = scene.holder_backend.store
    entries = [o.key async for o in store.list(layout.READY)]
    assert len(entries) == 1 and entries[0].endswith("/" + layout.encode_id("next"))


ZOMBIE_TASKS = 12
ZOMBIE_TTL = 0.08


@pytest.mark.slow
async def test_real_zombie_process_against_real_usurper(store_target: StoreTarget, tmp_path: Path) -> None:
    if not store_target.shared_between_processes:
        pytest.skip("the store is private to each process")
    tasks = [f"task {n}" for n in range(ZOMBIE_TASKS)]
    async with store_target.backend() as backend:
        snap = WorkflowSnapshot(INSTANCE, "flow")
        snap.update_position(AtTask(tasks[0]))
        await backend.save_snapshot(snap)
    claimed = [procs.context().Event() for _ in tasks]  # type: ignore[attr-defined]
    zombie_out, usurper_out = str(tmp_path / "zombie.json"), str(tmp_path / "usurper.json")
    url, options = store_target.url, store_target.options
    ctx = procs.context()
    zombie = ctx.Process(  # type: ignore[attr-defined]
        target=procs.zombie_worker, args=(url, options, INSTANCE, tasks, ZOMBIE_TTL, claimed, zombie_out)
    )
    usurper = ctx.Process(  # type: ignore[attr-defined]
        target=procs.usurper_worker, args=(url, options, INSTANCE, tasks, claimed, usurper_out)
    )
    zombie.start()
    usurper.start()
    for p in (zombie, usurper):
        p.join(90)
        if p.is_alive():
            p.kill()
    assert (zombie.exitcode, usurper.exitcode) == (0, 0)
    zombie_log = {e["task"]: e for e in procs.read_json(zombie_out)}
    usurper_log = {e["task"]: e for e in procs.read_json(usurper_out)}
    late = 0
    async with store_target.backend() as backend:
        for task in tasks:
            z, u = zombie_log[task], usurper_log[task]
            assert u["token"] == z["token"] + 1
            assert u["claimed"] >= z["expires"]
            recorded = await backend.load_task_result(INSTANCE, task)
            if z["result_call"] >= z["expires"]:
                late += 1
                assert z["result"] == "ClaimLostError", f"{task}: a write after expiry was accepted"
            if z["result"] == "ok":
                assert (recorded, u["result"]) == (b"zombie output", "ConflictError")
            else:
                assert (recorded, u["result"]) == (b"usurper output", "ok")
            # Renewal and release after the takeover fail, whatever the zombie's result did.
            assert (z["extend"], z["release"]) == ("ClaimLostError", "ClaimLostError"), f"{task}: {z}"
        claims = await backend.list_claims(INSTANCE)
        assert [(c.task_id, c.worker_id) for c in claims] == sorted((t, "usurper") for t in tasks)
    assert late > 0, "the zombie never wrote after its lease ran out"


async def test_a_workers_own_older_claim_is_fenced_off(scene: Scene) -> None:
    # The same worker released and claimed again: its first claim object (token 1) is stale, and
    # a delayed write carrying it must not pass for the new claim (token 2).
    z = scene.zombie_backend
    old = scene.zombie_claim
    assert old is not None
    await z.release_task_claim(INSTANCE, TASK, "zombie")
    again = await z.claim_task(INSTANCE, TASK, "zombie", TTL)
    assert again is not None and again.token == 2
    with pytest.raises(ClaimLostError):
        await z.save_task_result(INSTANCE, TASK, b"delayed", claim=old)
    assert await z.load_task_result(INSTANCE, TASK) is None
    await z.save_task_result(INSTANCE, TASK, b"current", claim=again)
    assert await z.load_task_result(INSTANCE, TASK) == b"current"


async def test_repair_racing_a_new_instance_keeps_its_objects(store_target: StoreTarget) -> None:
    # repair() lists the snapshots first and the blobs, cancellation requests and claims later
    # (after reading every snapshot: minutes on a large store). An instance created in between
    # looks orphaned to it; deleting its objects would lose its input and reset its fencing token.
    clock = ManualClock()
    repairer = store_target.backend(clock=clock)
    hooks = HookStore(repairer.store)
    repairer.store = hooks
    async with store_target.backend(clock=clock, inline_limit=16) as writer:

        async def new_instance_arrives() -> None:
            snap = WorkflowSnapshot("late", "flow", initial_input=b"a large input" * 10)
            snap.update_position(AtTask("t"))
            await writer.save_snapshot(snap)
            claim = await writer.claim_task("late", "t", "w", timedelta(seconds=1))
            assert claim is not None and claim.token == 1
            await writer.request_cancellation("late", "why", "me")
            clock.advance(timedelta(seconds=2))  # the claim expires: only its token matters now

        hooks.before("list", layout.BLOBS, new_instance_arrives)
        await repairer.repair()
        assert hooks.fired == 1
        assert (await writer.load_snapshot("late")).initial_input == b"a large input" * 10
        assert await writer.get_cancellation_request("late") is not None
        again = await writer.claim_task("late", "t", "w2", timedelta(seconds=1))
        assert again is not None and again.token == 2, "the fencing token went back"
    await repairer.close()
