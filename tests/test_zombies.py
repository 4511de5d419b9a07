"""Zombie fencing: a worker whose claim expired and was taken over keeps writing.

None of its writes may overwrite what the new holder wrote: results, claims, snapshots. The
single-process tests share one ``ManualClock`` between the zombie's and the new holder's
backends and step the takeover in between the zombie's own store requests, at every point where
it matters; the last test does the same with two real processes and real short TTLs.

Layout 2 fences inside the snapshot's compare-and-swap: a takeover publishes its token into the
snapshot before it is returned, so a zombie's write is refused wherever it stalled, even after
every check of its own had passed. A backend that granted a claim (or last wrote a snapshot)
remembers it and skips the read: its first request is then the conditional write itself, and
the hooks step the takeover in right before that write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

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
T = TypeVar("T")


class HookStore(ConditionalStore):
    """Forwards to ``inner``; runs one-shot hooks right before or right after a matching request."""

    def __init__(self, inner: ConditionalStore) -> None:
        self.inner = inner
        self.supports_conditional_delete = inner.supports_conditional_delete
        self._pending: list[tuple[str, str, Hook]] = []
        self.fired = 0
        #: Every request as (operation, key), in order: tests check where a hook could fire.
        self.requests: list[tuple[str, str]] = []

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

    async def _around(self, op: str, key: str, call: Awaitable[T]) -> T:
        self.requests.append((op, key))
        await self._fire(f"before {op}", key)
        result = await call
        await self._fire(f"after {op}", key)
        return result

    async def get(self, key: str) -> StoredObject | None:
        return await self._around("get", key, self.inner.get(key))

    async def put(self, key: str, data: bytes) -> str:
        return await self._around("put", key, self.inner.put(key, data))

    async def put_if_absent(self, key: str, data: bytes) -> str | None:
        return await self._around("put_if_absent", key, self.inner.put_if_absent(key, data))

    async def put_if_version(self, key: str, data: bytes, version: str) -> str | None:
        return await self._around("put_if_version", key, self.inner.put_if_version(key, data, version))

    async def delete(self, key: str) -> None:
        await self._around("delete", key, self.inner.delete(key))

    async def delete_if_version(self, key: str, version: str) -> bool:
        return await self._around("delete_if_version", key, self.inner.delete_if_version(key, version))

    async def list(self, prefix: str, *, start_after: str | None = None) -> AsyncIterator[ListedObject]:
        self.requests.append(("list", prefix))
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
        self.target = target
        self.clock = ManualClock()
        self.zombie_backend = target.backend_through(HookStore, clock=self.clock)
        assert isinstance(self.zombie_backend.store, HookStore)
        self.hooks = self.zombie_backend.store
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

    async def forgetful_zombie(self) -> None:
        """Replace the zombie's backend by a new one (a restarted process that still has its
        claim): it remembers no claim and no snapshot, so it reads both before it writes."""
        await self.zombie_backend.close()
        self.zombie_backend = self.target.backend_through(HookStore, clock=self.clock)
        assert isinstance(self.zombie_backend.store, HookStore)
        self.hooks = self.zombie_backend.store

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
    await scene.forgetful_zombie()
    scene.hooks.after("get", CLAIM_KEY, lambda: scene.take_over(write_result=True))
    assert scene.zombie_claim is not None
    with pytest.raises(ClaimLostError):
        await scene.zombie_backend.save_task_result(
            INSTANCE, TASK, b"zombie output", claim=scene.zombie_claim
        )
    assert scene.hooks.fired == 1
    await scene.assert_holder_intact(result=b"holder output")


async def test_result_check_passes_then_takeover_and_new_result(scene: Scene) -> None:
    # The zombie's claim check passed (on the claim it remembers granting: no request); right
    # before its compare-and-swap on the snapshot it remembers, the lease runs out and the new
    # holder records its result. The CAS fails, and the retry meets the published fence first
    # (was ConflictError in layout 1, where the fence was read before the write: now the claim
    # is refused as lost, which is what it is).
    scene.hooks.before("put_if_version", SNAPSHOT_KEY, lambda: scene.take_over(write_result=True))
    assert scene.zombie_claim is not None
    scene.hooks.requests.clear()
    with pytest.raises(ClaimLostError):
        await scene.zombie_backend.save_task_result(
            INSTANCE, TASK, b"zombie output", claim=scene.zombie_claim
        )
    assert scene.hooks.fired == 1
    assert scene.hooks.requests[0] == ("put_if_version", SNAPSHOT_KEY), "the check cost a request"
    await scene.assert_holder_intact(result=b"holder output")


async def test_result_snapshot_read_then_takeover_and_new_result(scene: Scene) -> None:
    # The zombie passed its check and read the snapshot; the new holder's result moves the
    # snapshot, so the zombie's compare-and-swap fails and its retry meets the fence.
    await scene.forgetful_zombie()
    scene.hooks.after("get", SNAPSHOT_KEY, lambda: scene.take_over(write_result=True))
    assert scene.zombie_claim is not None
    with pytest.raises(ClaimLostError):
        await scene.zombie_backend.save_task_result(
            INSTANCE, TASK, b"zombie output", claim=scene.zombie_claim
        )
    assert scene.hooks.fired == 1
    await scene.assert_holder_intact(result=b"holder output")


@pytest.mark.parametrize("forgetful", [False, True], ids=["remembered", "read"])
async def test_result_in_flight_during_takeover_is_refused(scene: Scene, forgetful: bool) -> None:
    # A write already past every check of its own when the lease runs out. In layout 1 it
    # landed (the fence was read before the write) and the new holder got ConflictError. Now
    # the takeover alone, before the new holder writes anything, publishes its token into the
    # snapshot: the zombie's compare-and-swap fails, its retry meets the fence, and the new
    # holder records. Exactly one output, the new holder's.
    if forgetful:
        await scene.forgetful_zombie()
    scene.hooks.before("put_if_version", SNAPSHOT_KEY, lambda: scene.take_over(write_result=False))
    assert scene.zombie_claim is not None
    with pytest.raises(ClaimLostError):
        await scene.zombie_backend.save_task_result(
            INSTANCE, TASK, b"zombie output", claim=scene.zombie_claim
        )
    assert scene.hooks.fired == 1
    await scene.holder_backend.save_task_result(INSTANCE, TASK, b"holder output", claim=scene.holder_claim)
    await scene.assert_holder_intact(result=b"holder output")


async def test_record_and_advance_in_flight_during_takeover_is_refused(scene: Scene) -> None:
    # The same for the one-write record-and-advance of the runtime's workers.
    scene.hooks.before("put_if_version", SNAPSHOT_KEY, lambda: scene.take_over(write_result=False))
    assert scene.zombie_claim is not None

    def advance(snapshot: WorkflowSnapshot) -> bool:
        snapshot.update_position(AtTask("zombie next"))
        return True

    with pytest.raises(ClaimLostError):
        await scene.zombie_backend.record_and_advance(
            scene.zombie_claim, b"zombie output", advance, reserve=TTL
        )
    assert scene.hooks.fired == 1
    await scene.assert_holder_intact(result=None)
    loaded = await scene.holder_backend.load_snapshot(INSTANCE)
    assert loaded.position == AtTask(TASK)


@pytest.mark.parametrize("operation", ["extend", "release"])
@pytest.mark.parametrize("forgetful", [False, True], ids=["remembered", "read"])
async def test_renewal_or_release_racing_the_takeover(scene: Scene, operation: str, forgetful: bool) -> None:
    # The zombie has its own (expired, not yet taken over) claim in hand, remembered or just
    # read; the takeover lands before its compare-and-swap, which must then fail rather than
    # revive or free the new holder's claim.
    if forgetful:
        await scene.forgetful_zombie()
        scene.hooks.after("get", CLAIM_KEY, lambda: scene.take_over(write_result=False))
    else:
        scene.hooks.before("put_if_version", CLAIM_KEY, lambda: scene.take_over(write_result=False))
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
    store = scene.holder_backend.store
    before: list[str] = []

    async def new_holder_moves_on() -> None:
        await scene.take_over(write_result=True)
        fresh = await scene.holder_backend.load_snapshot(INSTANCE)
        fresh.update_position(AtTask("next"))
        await scene.holder_backend.save_snapshot(fresh)
        before.extend([o.key async for o in store.list(layout.READY)])

    # The zombie saves from the copy it loaded (and remembers): its CAS is its first request.
    scene.hooks.before("put_if_version", SNAPSHOT_KEY, new_holder_moves_on)
    with pytest.raises(ConflictError):
        await scene.zombie_backend.save_snapshot(stale)
    assert scene.hooks.fired == 1
    await scene.assert_holder_intact(result=b"holder output")
    loaded = await scene.holder_backend.load_snapshot(INSTANCE)
    assert loaded.position == AtTask("next")
    # The zombie's failed save left no ready entry behind (it wrote one for "zombie next" before
    # its CAS): only the holder's task is offered. Entries its claims left are
    # test_request_budget.test_an_idle_poll_is_lists_only's concern.
    found = await scene.holder_backend.find_available_tasks("w", 10)
    assert [(t.instance_id, t.task_id) for t in found] == [(INSTANCE, "next")]
    own = [k for k in before if k.endswith("/" + layout.encode_id("zombie next"))]
    assert len(own) == 1, "the zombie writes its new task's entry before its CAS"
    entries = [o.key async for o in store.list(layout.READY)]
    assert sorted(entries) == sorted(k for k in before if k not in own)


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
    # repair() lists the snapshots first and the blobs later (after reading every snapshot:
    # minutes on a large store). An instance created in between looks orphaned to it; deleting
    # its objects would lose its input, and deleting its claim (layout 1 did) would reset its
    # fencing token; its cancellation request lives in its snapshot.
    clock = ManualClock()
    repairer = store_target.backend_through(HookStore, clock=clock)
    hooks = repairer.store
    assert isinstance(hooks, HookStore)
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


async def test_first_use_racing_another_first_use(store_target: StoreTarget) -> None:
    # Two processes open a new, empty store at once. The late one has read "no layout marker";
    # before it lists snapshots/ (to tell an empty store from one of layout 1), the early one
    # marks the store and saves an instance. The late one must not take that instance for a
    # layout-1 store and refuse the store (a race of the issue-11 kind: a decision taken on
    # what was read, acted on after the world moved).
    late = store_target.backend_through(HookStore, verify_conditional_writes=False)
    hooks = late.store
    assert isinstance(hooks, HookStore)
    async with store_target.backend(verify_conditional_writes=False) as early:

        async def early_saves() -> None:
            snap = WorkflowSnapshot("first", "flow")
            snap.update_position(AtTask("t"))
            await early.save_snapshot(snap)

        hooks.after("get", layout.MARKER, early_saves)
        assert await late.list_snapshots() == ["first"]
        assert hooks.fired == 1
    await late.close()
