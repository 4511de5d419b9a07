"""Incarnations and atomic fencing (issue 11), black-box: the failing inputs and the races of
their kind, each checked at every request boundary of the operation under test.

Every test here goes through public behaviour only (``PersistentBackend``, ``ObjectStoreBackend``
over a wrapped store, ``Client``/``Worker``, the CLI), so it stays valid whatever requests a
protocol makes. A sweep (:func:`tests.interleave.at_every_boundary`) holds the operation under
test before each of its store requests in turn, on an emptied root each time, runs the
interfering operation through a second backend over the same store (sharing one
``ManualClock``), resumes, and checks the invariant. The boundary is named in every failure.

Run on local disk, ``memory://`` and moto_server (deletes also on LocalStack; races in the
runtime's and CLI's own logic on local disk and memory only). moto's conditional PUT is
check-then-act (see ``test_store_atomicity.py``), which these one-writer-at-a-time sweeps never
exercise: only the interleaving forced here matters.

Races of the kind found with the 2026-11-30 protocol (operation, interfering operation, where
it was held, what broke), beyond the five of the issue:

- ``objstore-wfp gc`` vs a replace: after gc read x as finished, x is replaced; gc deletes the
  new, running x by id.
- ``Client.submit(replace)`` vs another submit: the delete removes the submit lock with the old
  instance's claims, so a second submitter takes the lock (token 1) and both write x.
- ``save_snapshot`` (create-or-overwrite, large input) vs ``delete_snapshot``: the delete removes
  the blob the save just uploaded; the save's retry reuses the blob's reference: x unreadable.
- ``check_and_cancel`` vs delete, re-create and a new cancellation request: its clean-up after
  the CAS deletes the new instance's request; the new instance is dispatched.
- ``repair()`` after a killed delete vs a re-create with a cancellation request: repair reads the
  old request and deletes the new one.
- ``Worker``: a run that found x before a replace claims the new instance's task and records a
  result computed from the old input; the old run's heartbeat (by worker id) adopts the new
  claim of the same worker, its release frees it, and its failure marks the new instance (or
  the task another worker took over) ``Failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest

from objstore_wfp import (
    AtTask,
    Cancelled,
    ClaimLostError,
    ConflictError,
    ManualClock,
    NotFoundError,
    ObjectStoreBackend,
    TaskClaim,
    WorkflowSnapshot,
)
from objstore_wfp.cli.main import main as cli_main
from objstore_wfp.runtime import Client, Flow, Worker
from objstore_wfp.runtime.errors import InstanceExistsError
from objstore_wfp.runtime.events import WorkerEvent
from objstore_wfp.runtime.retry import RetryPolicy
from objstore_wfp.stores.urls import open_store
from tests.backends import StoreTarget, local_store_target, memory_store_target
from tests.interleave import InterleavingStore, at_every_boundary, crash_when, interleave

__all__ = ["local_store_target", "memory_store_target"]

pytestmark = pytest.mark.timeout(240)

TTL = timedelta(seconds=10)
#: Larger than the default inline limit (256 KiB): the input lives in its own object.
BIG = 300 * 1024


LOCAL = pytest.param("local_store_target", id="local")
MEMORY = pytest.param("memory_store_target", id="memory")
MOTO = pytest.param("moto_store_target", id="moto", marks=pytest.mark.slow)
#: No conditional delete: the backend falls back to plain deletes there.
LOCALSTACK = pytest.param("localstack_store_target", id="localstack", marks=pytest.mark.slow)


@pytest.fixture(params=[LOCAL, MEMORY, MOTO])
def target(request: pytest.FixtureRequest) -> StoreTarget:
    """A fresh root on local disk, ``memory://`` and moto_server."""
    found: StoreTarget = request.getfixturevalue(request.param)
    return found


@pytest.fixture(params=[LOCAL, MEMORY])
def logic_target(request: pytest.FixtureRequest) -> StoreTarget:
    """For races in the runtime's and the CLI's logic, which no store changes: local disk and
    ``memory://`` (a sweep re-opens the CLI's store at every boundary: minutes on moto_server)."""
    found: StoreTarget = request.getfixturevalue(request.param)
    return found


@pytest.fixture(params=[LOCAL, MEMORY, MOTO, LOCALSTACK])
def delete_target(request: pytest.FixtureRequest) -> StoreTarget:
    """For races with deletes, where the store matters: also LocalStack, which cannot delete
    conditionally."""
    found: StoreTarget = request.getfixturevalue(request.param)
    return found


def snapshot(instance_id: str, data: bytes | None = b"in", task: str = "t") -> WorkflowSnapshot:
    """A new instance waiting at ``task``."""
    snap = WorkflowSnapshot(instance_id, "flow", initial_input=data)
    snap.update_position(AtTask(task))
    return snap


def big(label: str) -> bytes:
    """A ``BIG``-byte input that differs by ``label``."""
    return (label.encode() * BIG)[:BIG]


@dataclass
class Scene:
    """Two backends over one emptied root and one clock: ``held`` goes through ``store`` (the
    operation under test), ``other`` does the interfering operations."""

    root: StoreTarget
    clock: ManualClock
    store: InterleavingStore
    held: ObjectStoreBackend
    other: ObjectStoreBackend


class Stage:
    """The stores of one test, opened once (a new S3 client costs about a second here); each
    boundary of a sweep gets a :class:`Scene` on the emptied root, with new backends."""

    def __init__(self, root: StoreTarget) -> None:
        self.root = root
        self._held = root.store()
        self._other = root.store()

    @contextlib.asynccontextmanager
    async def scene(self) -> AsyncIterator[Scene]:
        """A :class:`Scene` on the root emptied of what the previous boundary left."""
        keys = [o.key async for o in self._other.list("")]
        await asyncio.gather(*(self._other.delete(key) for key in keys))
        clock = ManualClock()
        store = InterleavingStore(self._held)
        # No probe: it would add its requests to every sweep (test_probe.py covers it). Not
        # closed here: closing a backend closes the stores the next boundary uses.
        held = ObjectStoreBackend(store, clock=clock, verify_conditional_writes=False)
        other = ObjectStoreBackend(self._other, clock=clock, verify_conditional_writes=False)
        yield Scene(self.root, clock, store, held, other)

    async def close(self) -> None:
        await self._held.close()
        await self._other.close()


@pytest.fixture
async def stage(target: StoreTarget) -> AsyncIterator[Stage]:
    opened = Stage(target)
    yield opened
    await opened.close()


@pytest.fixture
async def logic_stage(logic_target: StoreTarget) -> AsyncIterator[Stage]:
    opened = Stage(logic_target)
    yield opened
    await opened.close()


@pytest.fixture
async def delete_stage(delete_target: StoreTarget) -> AsyncIterator[Stage]:
    opened = Stage(delete_target)
    yield opened
    await opened.close()


async def live_holders(s: Scene, instance_id: str, task_id: str) -> list[tuple[str, int]]:
    """``(worker, token)`` of every unexpired claim on the task."""
    now = s.clock.now()
    return [
        (c.worker_id, c.token)
        for c in await s.other.list_claims(instance_id)
        if c.task_id == task_id and not c.is_expired(now)
    ]


def gone(s: Scene, instance_id: str) -> Callable[[], Awaitable[bool]]:
    """Whether the instance is no longer listed: for killing a delete right after that."""

    async def check() -> bool:
        return instance_id not in await s.other.list_snapshots()

    return check


async def offered(backend: ObjectStoreBackend) -> list[tuple[str, str, bytes | None]]:
    return [(t.instance_id, t.task_id, t.input) for t in await backend.find_available_tasks("observer", 50)]


# -- 1. fencing tokens across delete and re-create ---------------------------------------------


@pytest.mark.parametrize("released", [False, True], ids=["held", "released"])
async def test_tokens_never_repeat_across_delete_and_recreate(target: StoreTarget, released: bool) -> None:
    clock = ManualClock()
    async with target.backend(clock=clock) as backend:
        await backend.save_snapshot(snapshot("x", b"old input"))
        old = await backend.claim_task("x", "t", "w", TTL)
        assert old is not None
        if released:
            await backend.release_task_claim("x", "t", "w")
        await backend.delete_snapshot("x")
        await backend.save_snapshot(snapshot("x", b"new input"))
        new = await backend.claim_task("x", "t", "w", TTL)
        assert new is not None
        assert new.token > old.token, f"token {new.token} handed out again after delete and re-create"
        with pytest.raises(ClaimLostError):
            await backend.save_task_result("x", "t", b"from the old input", claim=old)
        assert await backend.load_task_result("x", "t") is None
        await backend.save_task_result("x", "t", b"from the new input", claim=new)
        assert await backend.load_task_result("x", "t") == b"from the new input"


@pytest.mark.parametrize("heartbeats", [False, True], ids=["no-heartbeat", "heartbeats"])
async def test_replace_while_the_old_task_runs_ends_with_the_new_result(
    target: StoreTarget, heartbeats: bool
) -> None:
    # One worker (two slots) runs the old instance's task; the instance is replaced; the same
    # worker claims the new instance's task, and the old run finishes first (after renewing its
    # lease a few times, with heartbeats). Its result was computed from the old input: it must
    # not be recorded for the new instance, and its heartbeats must not adopt the new claim.
    old_started, new_started, old_finished = asyncio.Event(), asyncio.Event(), asyncio.Event()
    freed, checked = asyncio.Event(), asyncio.Event()
    # The replace and the new claim fit in the first heartbeat interval (1 s) of the old run.
    lease = timedelta(seconds=3) if heartbeats else timedelta(seconds=30)

    async def work(value: str) -> str:
        if value == "old":
            old_started.set()
            await new_started.wait()
            if heartbeats:
                await asyncio.sleep(2.2)
        else:
            new_started.set()
            await old_finished.wait()
            # The old run gives its claim back after its outcome: that must not free this run's.
            try:
                for _ in range(20):
                    await asyncio.sleep(0.05)
                    claims = await backend.list_claims("x")
                    if not any(c.worker_id == "w" and c.task_id == "work" for c in claims):
                        freed.set()
            finally:
                checked.set()  # also when this run is stopped for having lost its lease
        return f"done:{value}"

    def on_event(event: WorkerEvent) -> None:
        # The new run waits for old_finished, so the first outcome is the old run's.
        if event.kind in ("recorded", "lost", "duplicate", "cancelled"):
            old_finished.set()

    flow = Flow("replace").step(work, name="work")
    backend = target.backend()
    async with backend:
        client = Client(backend, [flow])
        await client.submit(flow, "old", instance_id="x")
        worker = Worker(
            backend, [flow], worker_id="w", concurrency=2, lease=lease, poll_interval=0.01, on_event=on_event
        )
        running = asyncio.ensure_future(worker.run_forever(handle_signals=False))
        try:
            await asyncio.wait_for(old_started.wait(), 20)
            await client.submit(flow, "new", instance_id="x", if_exists="replace")
            assert await client.result("x", timeout=30, poll_interval=0.02) == "done:new"
            await asyncio.wait_for(checked.wait(), 10)
            assert not freed.is_set(), "the old run's release freed the new run's claim while it ran"
        finally:
            worker.stop()
            worker.stop()
            old_finished.set()
            new_started.set()
            await asyncio.wait_for(running, 30)


# -- 2. a stalled writer and a takeover -------------------------------------------------------


@pytest.mark.parametrize("b_records_first", [False, True], ids=["b-records-after", "b-records-during"])
async def test_stalled_result_write_loses_to_the_takeover(stage: Stage, b_records_first: bool) -> None:
    async def attempt(k: int) -> bool:
        async with stage.scene() as s:
            await s.other.save_snapshot(snapshot("x"))
            a_claim = await s.held.claim_task("x", "t", "A", TTL)
            assert a_claim is not None

            async def take_over() -> tuple[bytes | None, TaskClaim | None, BaseException | None]:
                s.clock.advance(TTL + timedelta(seconds=1))  # A's lease runs out while it stalls
                before = await s.other.load_task_result("x", "t")
                b_claim = await s.other.claim_task("x", "t", "B", TTL)
                error = None
                if b_records_first and b_claim is not None:
                    try:
                        await s.other.save_task_result("x", "t", b"B", claim=b_claim)
                    except ConflictError as exc:
                        error = exc
                return before, b_claim, error

            outcome = await interleave(
                s.store, s.held.save_task_result("x", "t", b"A", claim=a_claim), take_over, at=k
            )
            before, b_claim, b_error = outcome.interference
            assert b_claim is not None and b_claim.token > a_claim.token, outcome.where
            if before == b"A":
                # A's write landed before the takeover: it stands, and B learns of it.
                assert outcome.error is None, f"{outcome.where}: {outcome.error!r}"
                assert await s.other.load_task_result("x", "t") == b"A"
                return outcome.stopped is not None
            assert isinstance(outcome.error, ClaimLostError), (
                f"{outcome.where}: A's lease was taken over before its write landed, yet it got "
                f"{outcome.error!r} instead of ClaimLostError"
            )
            if b_records_first:
                assert b_error is None, f"{outcome.where}: B's result was refused: {b_error!r}"
            else:
                await s.other.save_task_result("x", "t", b"B", claim=b_claim)
            assert await s.other.load_task_result("x", "t") == b"B", outcome.where
            assert await live_holders(s, "x", "t") == [("B", b_claim.token)], outcome.where
        return outcome.stopped is not None

    assert await at_every_boundary(attempt) > 0


@pytest.mark.parametrize("operation", ["extend", "release"])
async def test_stalled_extend_or_release_loses_to_the_takeover(stage: Stage, operation: str) -> None:
    async def attempt(k: int) -> bool:
        async with stage.scene() as s:
            await s.other.save_snapshot(snapshot("x"))
            a_claim = await s.held.claim_task("x", "t", "A", TTL)
            assert a_claim is not None and a_claim.expires_at is not None
            s.clock.advance(timedelta(seconds=1))  # so that a renewal changes the expiry
            renewed = a_claim.expires_at + timedelta(seconds=1)

            async def take_over() -> tuple[bool, TaskClaim | None]:
                claims = {c.worker_id: c for c in await s.other.list_claims("x")}
                # Whether A's own write landed before the takeover.
                landed = "A" not in claims if operation == "release" else claims["A"].expires_at == renewed
                s.clock.advance(TTL + timedelta(seconds=1))
                return landed, await s.other.claim_task("x", "t", "B", TTL)

            call = (
                s.held.extend_task_claim("x", "t", "A", TTL)
                if operation == "extend"
                else s.held.release_task_claim("x", "t", "A")
            )
            outcome = await interleave(s.store, call, take_over, at=k)
            landed, b_claim = outcome.interference
            assert b_claim is not None and b_claim.token > a_claim.token, outcome.where
            if landed:
                assert outcome.error is None, f"{outcome.where}: {outcome.error!r}"
            else:
                assert isinstance(outcome.error, ClaimLostError), f"{outcome.where}: {outcome.error!r}"
            assert await live_holders(s, "x", "t") == [("B", b_claim.token)], outcome.where
            assert await s.other.claim_task("x", "t", "C", TTL) is None, outcome.where
            await s.other.save_task_result("x", "t", b"B", claim=b_claim)
        return outcome.stopped is not None

    assert await at_every_boundary(attempt) > 0


@pytest.mark.parametrize("b_records_first", [False, True], ids=["b-records-after", "b-records-during"])
async def test_stalled_worker_never_overrides_the_takeover(stage: Stage, b_records_first: bool) -> None:
    # Worker A's whole task (find, claim, run, record, advance, release) is held at every
    # request; there, A's lease runs out and B takes the task over; B records during the stall
    # or once A has gone on. If nothing was recorded when B took over, B's output is the task's
    # result and the workflow's.
    async def by_a(value: str) -> str:
        return "A"

    async def by_b(value: str) -> str:
        return "B"

    flow_a = Flow("stall").step(by_a, name="work")
    flow_b = Flow("stall").step(by_b, name="work")
    assert flow_a.definition_hash == flow_b.definition_hash

    async def attempt(k: int) -> bool:
        async with stage.scene() as s:
            instance = await Client(s.other, [flow_a]).submit(flow_a, "in", instance_id="x")
            worker_a = Worker(s.held, [flow_a], worker_id="A", lease=TTL, concurrency=1, poll_interval=0.01)

            async def record_b(claim: TaskClaim | None) -> None:
                if claim is not None:
                    with contextlib.suppress(ConflictError):  # the assertion below tells
                        await s.other.save_task_result(instance, "work", b'"B"', claim=claim)

            async def take_over() -> tuple[bytes | None, TaskClaim | None]:
                s.clock.advance(TTL + timedelta(seconds=1))
                before = await s.other.load_task_result(instance, "work")
                b_claim = await s.other.claim_task(instance, "work", "B", TTL)
                if b_records_first and before is None:
                    await record_b(b_claim)
                return before, b_claim

            outcome = await interleave(s.store, worker_a.run_once(), take_over, at=k)
            before, b_claim = outcome.interference
            if not b_records_first and before is None:
                await record_b(b_claim)
            await Worker(s.other, [flow_b], worker_id="C", poll_interval=0.01).run_until_idle()
            expected = "A" if before is not None else "B"
            assert await Client(s.other, [flow_a]).result(instance, timeout=10) == expected, (
                f"{outcome.where}: recorded before the takeover: {before!r}"
            )
        return outcome.stopped is not None

    assert await at_every_boundary(attempt) > 0


@pytest.mark.parametrize("interference", ["takeover", "replace"])
async def test_a_failing_run_that_lost_its_task_fails_nothing(target: StoreTarget, interference: str) -> None:
    # A's run fails (its last attempt raises) after its task passed to B (lease expired and
    # taken over), or after the instance was replaced. Marking the workflow Failed is a write
    # of A's, begun under its claim: it must not land on B's task nor on the new instance.
    started, go = asyncio.Event(), asyncio.Event()

    async def by_a(value: str) -> str:
        started.set()
        await go.wait()
        raise RuntimeError("A's run failed")

    flow_a = Flow("failing").step(by_a, name="work")
    flow_b = Flow("failing").step(echo, name="work")
    clock = ManualClock()
    async with target.backend(clock=clock) as a, target.backend(clock=clock) as b:
        await Client(b, [flow_b]).submit(flow_b, "old", instance_id="x")
        worker_a = Worker(a, [flow_a], worker_id="A", lease=TTL, retry=RetryPolicy(max_attempts=1))
        running = asyncio.ensure_future(worker_a.run_once())
        await asyncio.wait_for(started.wait(), 20)
        if interference == "takeover":
            clock.advance(TTL + timedelta(seconds=1))
            assert await b.claim_task("x", "work", "B", TTL) is not None
            expected = "done:old"
        else:
            await Client(b, [flow_b]).submit(flow_b, "new", instance_id="x", if_exists="replace")
            expected = "done:new"
        go.set()
        await asyncio.wait_for(running, 20)
        if interference == "takeover":
            clock.advance(TTL + timedelta(seconds=1))  # B's lease runs out: C takes the task over
        await Worker(b, [flow_b], worker_id="C", poll_interval=0.01).run_until_idle()
        status = await Client(b, [flow_b]).status("x")
        assert (status.state, status.output, status.error) == ("completed", expected, None)


# -- 3. delete racing a re-create -------------------------------------------------------------


@pytest.mark.parametrize("claim_new", [False, True], ids=["recreate", "recreate-and-claim"])
async def test_delete_racing_a_recreate_leaves_the_new_instance_whole(
    delete_stage: Stage, claim_new: bool
) -> None:
    new_input = big("new")

    async def attempt(k: int) -> bool:
        async with delete_stage.scene() as s:
            await s.other.save_snapshot(snapshot("x", big("old")))
            old_claim = await s.other.claim_task("x", "t", "w0", TTL)
            assert old_claim is not None

            async def recreate() -> tuple[bool, TaskClaim | None]:
                existed = "x" in await s.other.list_snapshots()
                await s.other.save_snapshot(snapshot("x", new_input))
                claim = await s.other.claim_task("x", "t", "w1", TTL) if claim_new else None
                return existed, claim

            outcome = await interleave(s.store, s.held.delete_snapshot("x"), recreate, at=k)
            existed, new_claim = outcome.interference
            assert outcome.error is None, f"{outcome.where}: delete raised {outcome.error!r}"
            gone = "x" not in await s.other.list_snapshots()
            if gone and existed:
                # The delete took the re-created instance too: allowed only as a whole.
                assert await offered(s.other) == [], outcome.where
                assert await s.other.list_claims("x") == [], outcome.where
                return outcome.stopped is not None
            assert not gone, f"{outcome.where}: the delete removed an instance created after it"
            try:
                loaded = await s.other.load_snapshot("x")
            except Exception as exc:
                raise AssertionError(f"{outcome.where}: the new instance is unreadable: {exc!r}") from exc
            assert loaded.initial_input == new_input, outcome.where
            if new_claim is None:
                assert await offered(s.other) == [("x", "t", new_input)], outcome.where
            else:
                holders = await live_holders(s, "x", "t")
                assert holders == [("w1", new_claim.token)], f"{outcome.where}: {holders}"
                assert await s.other.claim_task("x", "t", "w2", TTL) is None, outcome.where
                assert new_claim.token > old_claim.token, f"{outcome.where}: token reused"
        return outcome.stopped is not None

    assert await at_every_boundary(attempt) > 0


# -- 4. repair racing a re-create and a takeover ----------------------------------------------


@pytest.mark.parametrize("leftover", ["claim-without-instance", "crashed-delete"])
async def test_repair_racing_a_recreate_and_takeover(stage: Stage, leftover: str) -> None:
    # An expired claim of an instance that does not exist (a crashed submitter's lock, or what
    # a delete killed right after the snapshot went left behind); repair() may clean it up, but
    # not once the instance exists again and W1 has taken the claim over.
    async def attempt(k: int) -> bool:
        async with stage.scene() as s:
            if leftover == "crashed-delete":
                await s.other.save_snapshot(snapshot("x"))
            stale = await s.other.claim_task("x", "t", "w0", timedelta(seconds=1))
            assert stale is not None
            if leftover == "crashed-delete":
                await crash_when(s.store, s.held.delete_snapshot("x"), gone(s, "x"))
            s.clock.advance(timedelta(minutes=30))

            async def recreate_and_take_over() -> TaskClaim | None:
                await s.other.save_snapshot(snapshot("x"))
                return await s.other.claim_task("x", "t", "w1", TTL)

            outcome = await interleave(
                s.store, s.held.repair(grace=timedelta(minutes=1)), recreate_and_take_over, at=k
            )
            assert outcome.error is None, f"{outcome.where}: repair raised {outcome.error!r}"
            w1 = outcome.interference
            assert w1 is not None, outcome.where
            w2 = await s.other.claim_task("x", "t", "w2", TTL)
            assert w2 is None, f"{outcome.where}: w2 got token {w2.token} while w1 holds {w1.token}"
            assert await live_holders(s, "x", "t") == [("w1", w1.token)], outcome.where
            assert w1.token != stale.token, f"{outcome.where}: token {w1.token} handed out twice"
        return outcome.stopped is not None

    assert await at_every_boundary(attempt) > 0


async def test_repair_racing_a_recreate_keeps_the_new_cancellation_request(stage: Stage) -> None:
    # A delete of x crashed right after the snapshot went: what it had not removed yet (claims,
    # a cancellation request, ...) is left behind. Long after, repair() cleans up while x is
    # created again, gets a new cancellation request and its task is claimed.
    async def attempt(k: int) -> bool:
        async with stage.scene() as s:
            await s.other.save_snapshot(snapshot("x"))
            assert await s.other.claim_task("x", "t", "w0", TTL) is not None
            await s.other.request_cancellation("x", "old", "tester")
            await crash_when(s.store, s.held.delete_snapshot("x"), gone(s, "x"))
            s.clock.advance(timedelta(minutes=30))

            async def recreate() -> TaskClaim | None:
                await s.other.save_snapshot(snapshot("x", b"new"))
                await s.other.request_cancellation("x", "new", "tester")
                return await s.other.claim_task("x", "t", "w1", TTL)

            outcome = await interleave(s.store, s.held.repair(grace=timedelta(minutes=1)), recreate, at=k)
            assert outcome.error is None, f"{outcome.where}: repair raised {outcome.error!r}"
            w1 = outcome.interference
            assert w1 is not None and w1.token > 1, f"{outcome.where}: {w1}"
            pending = await s.other.get_cancellation_request("x")
            assert pending is not None and pending.reason == "new", (
                f"{outcome.where}: the new instance's cancellation request is {pending}"
            )
            assert await offered(s.other) == [], f"{outcome.where}: an instance being cancelled is offered"
            assert await live_holders(s, "x", "t") == [("w1", w1.token)], outcome.where
        return outcome.stopped is not None

    assert await at_every_boundary(attempt) > 0


# -- the hunt: deletes, gc and locks acting on whatever is there ----------------------------


async def echo(value: str) -> str:
    return f"done:{value}"


ECHO = Flow("echo").step(echo, name="work")


def cli_store_args(root: StoreTarget) -> list[str]:
    """``--store`` and ``-o KEY=VALUE`` arguments that open ``root`` from the CLI."""
    args = ["--store", root.url]
    for key, value in root.options.items():
        args += ["-o", f"{key}={json.dumps(value) if isinstance(value, dict) else value}"]
    return args


async def test_gc_racing_a_replace_keeps_the_new_instance(
    logic_stage: Stage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `objstore-wfp gc` reads a finished instance, decides to delete it, and deletes by id; a
    # replace in between makes a new, running instance under that id, which gc must not touch.
    async def attempt(k: int) -> bool:
        async with logic_stage.scene() as s:
            client = Client(s.other, [ECHO])
            finished = snapshot("x")
            finished.mark_completed(b'"done:old"')
            await s.other.save_snapshot(finished)
            # The CLI opens its own store: wrap it too, sharing the held store's stops.
            monkeypatch.setattr(
                "objstore_wfp.cli.store.open_store", lambda url, **o: s.store.rewrap(open_store(url, **o))
            )
            argv = ["gc", "--older-than", "0", *cli_store_args(s.root)]

            async def replace() -> None:
                await client.submit(ECHO, "new", instance_id="x", if_exists="replace")

            outcome = await interleave(s.store, asyncio.to_thread(cli_main, argv), replace, at=k)
            assert outcome.result() == 0, outcome.where
            try:
                status = await client.status("x")
            except NotFoundError as exc:
                raise AssertionError(
                    f"{outcome.where}: gc deleted the instance that replaced the one it read"
                ) from exc
            assert status.state == "in_progress", f"{outcome.where}: {status}"
            assert await offered(s.other) == [("x", "work", b'"new"')], outcome.where
        return outcome.stopped is not None

    assert await at_every_boundary(attempt) > 0


async def test_submit_replace_racing_another_submit(logic_stage: Stage) -> None:
    # Client 1 replaces x; client 2 submits x ("error" if it exists) while client 1 is held at
    # each request, and a worker runs whatever client 2 created. Submits of one id are
    # serialised by the submit lock: client 1 must succeed and x must end with its input.
    async def attempt(k: int) -> bool:
        async with logic_stage.scene() as s:
            await Client(s.other, [ECHO]).submit(ECHO, "zero", instance_id="x")
            second: asyncio.Future[str] | None = None

            async def another_submit() -> None:
                nonlocal second
                second = asyncio.ensure_future(Client(s.other, [ECHO]).submit(ECHO, "two", instance_id="x"))
                done, _ = await asyncio.wait({second}, timeout=0.2)
                if done:  # not waiting for client 1's lock: run what it created
                    await Worker(s.other, [ECHO], poll_interval=0.01).run_until_idle()

            first = Client(s.held, [ECHO]).submit(ECHO, "one", instance_id="x", if_exists="replace")
            outcome = await interleave(s.store, first, another_submit, at=k)
            assert second is not None
            [second_outcome] = await asyncio.gather(second, return_exceptions=True)
            assert outcome.error is None, f"{outcome.where}: the replacing submit raised {outcome.error!r}"
            assert second_outcome == "x" or isinstance(second_outcome, InstanceExistsError), (
                f"{outcome.where}: {second_outcome!r}"
            )
            await Worker(s.other, [ECHO], poll_interval=0.01).run_until_idle()
            result = await Client(s.other, [ECHO]).result("x", timeout=10)
            assert result == "done:one", f"{outcome.where}: the replaced x ended as {result!r}"
        return outcome.stopped is not None

    assert await at_every_boundary(attempt) > 0


async def test_save_racing_a_delete_stays_readable(delete_stage: Stage) -> None:
    # A create-or-overwrite save of x with a large input is held at each request while x is
    # deleted. Whatever the order, a save that returns has stored a readable, dispatchable x.
    new_input = big("new")

    async def attempt(k: int) -> bool:
        async with delete_stage.scene() as s:
            await s.other.save_snapshot(snapshot("x", big("old")))

            async def delete() -> bool:
                """Whether the save had landed when the delete began."""
                try:
                    landed = (await s.other.load_snapshot("x")).initial_input == new_input
                    await s.other.delete_snapshot("x")
                except NotFoundError:
                    return False
                return landed

            outcome = await interleave(s.store, s.held.save_snapshot(snapshot("x", new_input)), delete, at=k)
            assert outcome.error is None, f"{outcome.where}: the save raised {outcome.error!r}"
            if "x" not in await s.other.list_snapshots():
                # Only a delete after the save's write may leave nothing.
                assert outcome.interference, f"{outcome.where}: the save returned but stored nothing"
                return outcome.stopped is not None
            try:
                loaded = await s.other.load_snapshot("x")
            except Exception as exc:
                raise AssertionError(f"{outcome.where}: the saved instance is unreadable: {exc!r}") from exc
            assert loaded.initial_input == new_input, outcome.where
            assert await offered(s.other) == [("x", "t", new_input)], outcome.where
        return outcome.stopped is not None

    assert await at_every_boundary(attempt) > 0


async def test_check_and_cancel_racing_a_recreate_keeps_the_new_request(stage: Stage) -> None:
    # check_and_cancel cancels x and then cleans up after it; meanwhile x is deleted, saved
    # again, and the new x gets a cancellation request. The clean-up must not remove that
    # request: the new x must end cancelled or with its request pending, never dispatchable.
    async def attempt(k: int) -> bool:
        async with stage.scene() as s:
            await s.other.save_snapshot(snapshot("x", b"old"))
            await s.other.request_cancellation("x", "old", "tester")

            async def recreate_and_cancel() -> None:
                with contextlib.suppress(NotFoundError):
                    await s.other.delete_snapshot("x")
                await s.other.save_snapshot(snapshot("x", b"new"))
                await s.other.request_cancellation("x", "new", "tester")

            outcome = await interleave(s.store, s.held.check_and_cancel("x", "t"), recreate_and_cancel, at=k)
            assert outcome.error is None, f"{outcome.where}: {outcome.error!r}"
            state = (await s.other.load_snapshot("x")).state
            pending = await s.other.get_cancellation_request("x")
            assert isinstance(state, Cancelled) or (pending is not None and pending.reason == "new"), (
                f"{outcome.where}: the new instance lost its cancellation request ({state}, {pending})"
            )
            assert await offered(s.other) == [], f"{outcome.where}: a cancelled instance is dispatchable"
        return outcome.stopped is not None

    assert await at_every_boundary(attempt) > 0


async def test_a_run_found_before_a_replace_records_nothing_for_the_new_instance(stage: Stage) -> None:
    # Worker A's whole task (find, claim, run, record, advance, release) is held at every
    # request while x is replaced with a new input. Whatever A found, claimed or computed
    # from the old input, x ends with the new input's result.
    async def attempt(k: int) -> bool:
        async with stage.scene() as s:
            client = Client(s.other, [ECHO])
            await client.submit(ECHO, "old", instance_id="x")
            worker_a = Worker(s.held, [ECHO], worker_id="A", lease=TTL, poll_interval=0.01)

            async def replace() -> None:
                await client.submit(ECHO, "new", instance_id="x", if_exists="replace")

            outcome = await interleave(s.store, worker_a.run_once(), replace, at=k)
            await Worker(s.other, [ECHO], worker_id="C", poll_interval=0.01).run_until_idle()
            result = await client.result("x", timeout=10)
            assert result == "done:new", f"{outcome.where}: the replaced x ended as {result!r}"
        return outcome.stopped is not None

    assert await at_every_boundary(attempt) > 0
