"""Conformance: snapshots and task results (save, load, CAS, terminal states, delete, list)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

import pytest

from objstore_wfp.clock import ManualClock
from objstore_wfp.contract import PersistentBackend
from objstore_wfp.errors import ConflictError, InvalidArgumentError, NotFoundError
from objstore_wfp.model import (
    AtFork,
    AtJoin,
    AtTask,
    Cancelled,
    Completed,
    Failed,
    InProgress,
    NotStarted,
    TaskResult,
    WorkflowSnapshot,
)
from objstore_wfp.testing._support import ALL_BYTES, LARGE, TTL, expect, make_snapshot


def _not_started() -> WorkflowSnapshot:
    return WorkflowSnapshot("wf-1", "def-1")


def _at_task() -> WorkflowSnapshot:
    return make_snapshot(position=AtTask("charge card"))


def _at_fork() -> WorkflowSnapshot:
    return make_snapshot(position=AtFork("fork-1", ["a", "b", "c"], ["b"]))


def _at_join() -> WorkflowSnapshot:
    return make_snapshot(position=AtJoin("join-1", ["a", "b"]))


def _with_results() -> WorkflowSnapshot:
    s = make_snapshot(position=AtTask("t3"))
    s.mark_task_completed("t1", b"one")
    s.mark_task_completed("t2", ALL_BYTES)
    s.mark_task_completed("empty", b"")
    s.update_position(AtTask("t3"))
    return s


def _large_result() -> WorkflowSnapshot:
    s = make_snapshot(position=AtTask("t2"))
    s.mark_task_completed("t1", LARGE)
    return s


def _no_input() -> WorkflowSnapshot:
    return make_snapshot(initial_input=None)


def _empty_input() -> WorkflowSnapshot:
    return make_snapshot(initial_input=b"")


def _binary_input() -> WorkflowSnapshot:
    return make_snapshot(initial_input=ALL_BYTES)


def _large_input() -> WorkflowSnapshot:
    return make_snapshot(initial_input=LARGE)


def _urgent() -> WorkflowSnapshot:
    return make_snapshot(priority=1, definition_hash="sha256:ünïcødé ✓")


def _lazy() -> WorkflowSnapshot:
    return make_snapshot(priority=5, definition_hash="")


def _completed() -> WorkflowSnapshot:
    s = make_snapshot()
    s.mark_completed(ALL_BYTES)
    return s


def _completed_empty() -> WorkflowSnapshot:
    s = make_snapshot()
    s.mark_completed(b"")
    return s


def _completed_large() -> WorkflowSnapshot:
    s = make_snapshot()
    s.mark_completed(LARGE)
    return s


def _failed() -> WorkflowSnapshot:
    s = make_snapshot()
    s.mark_failed('boom: "quoted" \n newline \u2603')
    return s


def _cancelled() -> WorkflowSnapshot:
    s = make_snapshot()
    s.state = Cancelled(
        "user asked",
        "admin@example.com",
        datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=timezone.utc),
        {"t1": TaskResult("t1", b"out-1"), "t2": TaskResult("t2", b"")},
        "t3",
    )
    return s


def _cancelled_minimal() -> WorkflowSnapshot:
    s = make_snapshot()
    s.state = Cancelled("", "", datetime(2026, 1, 1, tzinfo=timezone.utc))
    return s


VARIANTS: dict[str, Callable[[], WorkflowSnapshot]] = {
    "not_started": _not_started,
    "at_task": _at_task,
    "at_fork": _at_fork,
    "at_join": _at_join,
    "with_results": _with_results,
    "large_result": _large_result,
    "no_input": _no_input,
    "empty_input": _empty_input,
    "binary_input": _binary_input,
    "large_input": _large_input,
    "priority_1": _urgent,
    "priority_5": _lazy,
    "completed": _completed,
    "completed_empty": _completed_empty,
    "completed_large": _completed_large,
    "failed": _failed,
    "cancelled": _cancelled,
    "cancelled_minimal": _cancelled_minimal,
}

TERMINAL = {"completed": _completed, "failed": _failed, "cancelled": _cancelled}


def make_snapshot_like(snapshot: WorkflowSnapshot) -> WorkflowSnapshot:
    """A never-saved copy with the same content (``version`` is None)."""
    copy = make_snapshot(snapshot.instance_id)
    copy.state = InProgress(AtTask("t1"))
    copy.created_at, copy.updated_at = snapshot.created_at, snapshot.updated_at
    return copy


class SnapshotTests:
    """Snapshots: round trips, versions and compare-and-swap, terminal states, delete and list."""

    # -- round trips -------------------------------------------------------------------------
    @pytest.mark.parametrize("variant", list(VARIANTS))
    async def test_round_trip(self, backend: PersistentBackend, variant: str) -> None:
        original = VARIANTS[variant]()
        expected = VARIANTS[variant]()
        expected.created_at, expected.updated_at = original.created_at, original.updated_at
        await backend.save_snapshot(original)
        loaded = await backend.load_snapshot("wf-1")
        assert loaded == expected, f"{variant}: the loaded snapshot differs from the saved one"
        assert type(loaded.state) is type(expected.state)
        assert loaded.completed_tasks == expected.completed_tasks
        assert loaded.created_at.utcoffset() is not None and loaded.updated_at.utcoffset() is not None

    async def test_save_does_not_mutate_anything_but_version(self, backend: PersistentBackend) -> None:
        snapshot = _with_results()
        before = _with_results()
        before.created_at, before.updated_at = snapshot.created_at, snapshot.updated_at
        await backend.save_snapshot(snapshot)
        assert snapshot == before, "save_snapshot may only set snapshot.version"

    async def test_loads_are_independent_copies(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(_with_results())
        first = await backend.load_snapshot("wf-1")
        first.mark_task_completed("t3", b"local only")
        second = await backend.load_snapshot("wf-1")
        assert "t3" not in second.completed_tasks, "mutating a loaded snapshot changed the stored one"

    # -- versions ----------------------------------------------------------------------------
    async def test_save_sets_and_returns_version(self, backend: PersistentBackend) -> None:
        snapshot = make_snapshot()
        assert snapshot.version is None
        version = await backend.save_snapshot(snapshot)
        assert isinstance(version, str) and version, (
            f"save_snapshot must return a str version, got {version!r}"
        )
        assert snapshot.version == version, "save_snapshot must set snapshot.version to what it returns"
        loaded = await backend.load_snapshot("wf-1")
        assert loaded.version == version, "load_snapshot must report the version the last save returned"

    async def test_every_save_gives_a_new_version(self, backend: PersistentBackend) -> None:
        snapshot = make_snapshot()
        seen = {await backend.save_snapshot(snapshot)}
        for n in range(4):
            snapshot.update_position(AtTask(f"step-{n}"))
            version = await backend.save_snapshot(snapshot)
            assert version not in seen, f"save #{n + 2} reused version {version!r}"
            seen.add(version)

    async def test_cas_succeeds_on_current_version(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        loaded = await backend.load_snapshot("wf-1")
        old = loaded.version
        loaded.mark_task_completed("t1", b"out")
        loaded.update_position(AtTask("t2"))
        new = await backend.save_snapshot(loaded)
        assert new != old and loaded.version == new
        again = await backend.load_snapshot("wf-1")
        assert again.position == AtTask("t2") and again.last_completed_task_id == "t1"
        # The version a save returns is good for the next compare-and-swap.
        again.update_position(AtTask("t3"))
        await backend.save_snapshot(again)

    async def test_cas_conflicts_when_version_moved(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        a = await backend.load_snapshot("wf-1")
        b = await backend.load_snapshot("wf-1")
        a.update_position(AtTask("from-a"))
        await backend.save_snapshot(a)
        b.update_position(AtTask("from-b"))
        stale = b.version
        with expect(ConflictError, "CAS save with a version another save replaced"):
            await backend.save_snapshot(b)
        assert b.version == stale, "a failed save must leave snapshot.version unchanged"
        stored = await backend.load_snapshot("wf-1")
        assert stored.position == AtTask("from-a"), "a failed CAS must not change the stored snapshot"

    async def test_concurrent_cas_has_one_winner(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        copies = [await backend.load_snapshot("wf-1") for _ in range(10)]
        for n, copy in enumerate(copies):
            copy.update_position(AtTask(f"writer-{n}"))
        outcomes = await asyncio.gather(*(backend.save_snapshot(c) for c in copies), return_exceptions=True)
        winners = [n for n, o in enumerate(outcomes) if isinstance(o, str)]
        losers = [o for o in outcomes if isinstance(o, ConflictError)]
        assert len(winners) == 1 and len(losers) == 9, (
            f"expected 1 winner and 9 ConflictError, got {outcomes!r}"
        )
        stored = await backend.load_snapshot("wf-1")
        assert stored.position == AtTask(f"writer-{winners[0]}")

    async def test_cas_detects_a_rewrite_of_identical_bytes(self, backend: PersistentBackend) -> None:
        # A version derived from the content alone (an MD5 ETag, a hash) would let the stale
        # writer below through once the stored bytes are back to what it loaded: a lost update.
        original = make_snapshot()
        await backend.save_snapshot(original)
        stale = await backend.load_snapshot("wf-1")
        first_version = stale.version
        moved = await backend.load_snapshot("wf-1")
        moved.update_position(AtTask("elsewhere"))
        await backend.save_snapshot(moved)
        back = await backend.load_snapshot("wf-1")
        back.state = InProgress(AtTask("t1"))
        back.updated_at = original.updated_at
        await backend.save_snapshot(back)
        assert back.version != first_version, "a later write reused an earlier version (ABA)"
        again = await backend.save_snapshot(make_snapshot_like(original))
        assert again not in (first_version, back.version), "re-saving identical bytes reused a version"
        stale.update_position(AtTask("stale writer"))
        with expect(ConflictError, "CAS save with a version two writes old, the content written back since"):
            await backend.save_snapshot(stale)
        assert (await backend.load_snapshot("wf-1")).position == AtTask("t1")

    async def test_cas_on_missing_snapshot_conflicts(self, backend: PersistentBackend) -> None:
        snapshot = make_snapshot()
        await backend.save_snapshot(snapshot)
        await backend.delete_snapshot("wf-1")
        with expect(ConflictError, "CAS save of a deleted snapshot"):
            await backend.save_snapshot(snapshot)
        assert await backend.list_snapshots() == []

    async def test_version_none_creates_or_overwrites(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot(position=AtTask("first")))
        replacement = make_snapshot(position=AtTask("second"), priority=1)
        assert replacement.version is None
        await backend.save_snapshot(replacement)
        stored = await backend.load_snapshot("wf-1")
        assert stored.position == AtTask("second") and stored.priority == 1

    # -- terminal states ---------------------------------------------------------------------
    @pytest.mark.parametrize("terminal", list(TERMINAL))
    async def test_terminal_states_are_write_once(self, backend: PersistentBackend, terminal: str) -> None:
        final = TERMINAL[terminal]()
        await backend.save_snapshot(final)
        loaded = await backend.load_snapshot("wf-1")
        with expect(ConflictError, f"saving the same {terminal} snapshot again with its version"):
            await backend.save_snapshot(loaded)
        with expect(ConflictError, f"overwriting a {terminal} snapshot with version=None"):
            await backend.save_snapshot(make_snapshot(position=AtTask("revived")))
        again = TERMINAL[terminal]()
        with expect(ConflictError, f"saving an identical {terminal} snapshot with version=None"):
            await backend.save_snapshot(again)
        stored = await backend.load_snapshot("wf-1")
        assert type(stored.state) is type(final.state) and stored.version == loaded.version

    async def test_cas_into_terminal_state(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        await backend.save_task_result("wf-1", "t1", b"out-1")
        loaded = await backend.load_snapshot("wf-1")
        loaded.mark_completed(b"final")
        await backend.save_snapshot(loaded)
        stored = await backend.load_snapshot("wf-1")
        assert stored.state == Completed(b"final") and stored.is_terminal

    # -- results recorded through snapshots --------------------------------------------------
    async def test_snapshot_results_are_first_wins(self, backend: PersistentBackend) -> None:
        first = make_snapshot(position=AtTask("t2"))
        first.mark_task_completed("t1", b"first")
        await backend.save_snapshot(first)
        rival = make_snapshot(position=AtTask("t2"))
        rival.mark_task_completed("t1", b"second")
        with expect(ConflictError, "a snapshot whose result for t1 differs from the recorded one"):
            await backend.save_snapshot(rival)
        assert await backend.load_task_result("wf-1", "t1") == b"first"
        same = make_snapshot(position=AtTask("t3"))
        same.mark_task_completed("t1", b"first")
        same.mark_task_completed("t2", b"new")
        await backend.save_snapshot(same)
        assert await backend.load_task_result("wf-1", "t2") == b"new"
        stored = await backend.load_snapshot("wf-1")
        assert {t: r.output for t, r in stored.completed_tasks.items()} == {"t1": b"first", "t2": b"new"}

    async def test_save_never_forgets_recorded_results(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot(position=AtFork("f", ["a", "b"])))
        stale = await backend.load_snapshot("wf-1")
        await backend.save_task_result("wf-1", "a", b"out-a")
        # A plain overwrite and a CAS save made without seeing "a" both keep it.
        await backend.save_snapshot(make_snapshot(position=AtFork("f", ["a", "b"])))
        reloaded = await backend.load_snapshot("wf-1")
        assert reloaded.completed_tasks.get("a") == TaskResult("a", b"out-a")
        stale.version = reloaded.version
        await backend.save_snapshot(stale)
        final = await backend.load_snapshot("wf-1")
        assert final.completed_tasks.get("a") == TaskResult("a", b"out-a"), "a save dropped a recorded result"

    # -- task results ------------------------------------------------------------------------
    @pytest.mark.parametrize(
        "output", [b"out", b"", ALL_BYTES, LARGE], ids=["plain", "empty", "all_bytes", "large"]
    )
    async def test_task_result_round_trip(self, backend: PersistentBackend, output: bytes) -> None:
        await backend.save_snapshot(make_snapshot())
        assert await backend.load_task_result("wf-1", "t1") is None
        await backend.save_task_result("wf-1", "t1", output)
        assert await backend.load_task_result("wf-1", "t1") == output
        stored = await backend.load_snapshot("wf-1")
        assert stored.completed_tasks == {"t1": TaskResult("t1", output)}

    async def test_task_result_does_not_move_the_workflow(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot(position=AtFork("f", ["a", "b"])))
        await backend.save_task_result("wf-1", "a", b"out-a")
        stored = await backend.load_snapshot("wf-1")
        assert stored.position == AtFork("f", ["a", "b"]), "save_task_result must not change the position"
        assert stored.last_completed_task_id is None, "save_task_result must not set last_completed_task_id"
        assert isinstance(stored.state, InProgress)

    async def test_task_result_same_output_is_a_no_op(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        await backend.save_task_result("wf-1", "t1", b"out")
        await backend.save_task_result("wf-1", "t1", b"out")
        assert await backend.load_task_result("wf-1", "t1") == b"out"

    async def test_task_result_first_wins(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        await backend.save_task_result("wf-1", "t1", b"first")
        with expect(ConflictError, "a second, different output for the same task"):
            await backend.save_task_result("wf-1", "t1", b"second")
        with expect(ConflictError, "an empty output after a non-empty one"):
            await backend.save_task_result("wf-1", "t1", b"")
        assert await backend.load_task_result("wf-1", "t1") == b"first"

    async def test_concurrent_results_of_one_instance_are_all_kept(self, backend: PersistentBackend) -> None:
        tasks = [f"task-{n:02d}" for n in range(16)]
        await backend.save_snapshot(make_snapshot(position=AtFork("f", tasks)))
        await asyncio.gather(*(backend.save_task_result("wf-1", t, t.encode()) for t in tasks))
        stored = await backend.load_snapshot("wf-1")
        missing = sorted(set(tasks) - set(stored.completed_tasks))
        assert not missing, f"concurrent save_task_result lost {missing}"
        for t in tasks:
            assert await backend.load_task_result("wf-1", t) == t.encode()

    async def test_results_survive_concurrent_snapshot_saves(self, backend: PersistentBackend) -> None:
        # Results racing with overwrites and CAS saves made without seeing them: none may be lost.
        tasks = [f"task-{n:02d}" for n in range(12)]
        await backend.save_snapshot(make_snapshot(position=AtFork("f", tasks)))
        stale = [await backend.load_snapshot("wf-1") for _ in range(3)]
        saves = [backend.save_snapshot(make_snapshot(position=AtFork("f", tasks))) for _ in range(3)]
        saves += [backend.save_snapshot(s) for s in stale]
        results = [backend.save_task_result("wf-1", t, t.encode()) for t in tasks]
        calls: list[Awaitable[object]] = [*results]
        for n, save in enumerate(saves):
            calls.insert(3 * n + 1, save)  # spread the saves among the results
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        unexpected = [
            o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, ConflictError)
        ]
        assert not unexpected, f"unexpected errors: {unexpected!r}"
        stored = await backend.load_snapshot("wf-1")
        missing = sorted(set(tasks) - set(stored.completed_tasks))
        assert not missing, f"snapshot saves racing with save_task_result lost {missing}"
        for t in tasks:
            assert await backend.load_task_result("wf-1", t) == t.encode()

    async def test_concurrent_rival_results_have_one_winner(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        outputs = [f"out-{n}".encode() for n in range(20)]
        outcomes = await asyncio.gather(
            *(backend.save_task_result("wf-1", "t1", o) for o in outputs), return_exceptions=True
        )
        winners = [o for o, r in zip(outputs, outcomes, strict=True) if r is None]
        assert len(winners) == 1, f"expected exactly one recorded output, got {outcomes!r}"
        assert all(isinstance(r, ConflictError) for r in outcomes if r is not None), outcomes
        assert await backend.load_task_result("wf-1", "t1") == winners[0]

    async def test_task_result_needs_a_snapshot(self, backend: PersistentBackend) -> None:
        with expect(NotFoundError, "save_task_result for an instance that was never saved"):
            await backend.save_task_result("missing", "t1", b"out")
        with expect(NotFoundError, "load_task_result for an instance that was never saved"):
            await backend.load_task_result("missing", "t1")
        assert await backend.list_snapshots() == []

    @pytest.mark.parametrize("terminal", ["completed", "failed"])
    async def test_results_readable_after_completion(self, backend: PersistentBackend, terminal: str) -> None:
        await backend.save_snapshot(make_snapshot())
        await backend.save_task_result("wf-1", "t1", b"out-1")
        loaded = await backend.load_snapshot("wf-1")
        loaded.mark_task_completed("t2", b"out-2")
        loaded.update_position(AtTask("t3"))
        # Completed/Failed states hold no results: they must be recorded by a save before.
        await backend.save_snapshot(loaded)
        if terminal == "completed":
            loaded.mark_completed(b"final")
        else:
            loaded.mark_failed("boom")
        await backend.save_snapshot(loaded)
        assert await backend.load_task_result("wf-1", "t1") == b"out-1"
        assert await backend.load_task_result("wf-1", "t2") == b"out-2"
        assert await backend.load_task_result("wf-1", "t3") is None
        stored = await backend.load_snapshot("wf-1")
        assert stored.completed_tasks == {}, "Completed/Failed states hold no completed_tasks"

    @pytest.mark.parametrize("terminal", list(TERMINAL))
    async def test_task_result_on_terminal_instance(self, backend: PersistentBackend, terminal: str) -> None:
        await backend.save_snapshot(make_snapshot())
        await backend.save_task_result("wf-1", "t1", b"out-1")
        loaded = await backend.load_snapshot("wf-1")
        final = TERMINAL[terminal]()
        if isinstance(final.state, Cancelled):
            final.state.completed_tasks = dict(loaded.completed_tasks)
        loaded.state = final.state
        await backend.save_snapshot(loaded)
        await backend.save_task_result("wf-1", "t1", b"out-1")  # the same output again: no-op
        with expect(ConflictError, f"a new task result on a {terminal} instance"):
            await backend.save_task_result("wf-1", "late", b"late")
        assert await backend.load_task_result("wf-1", "late") is None

    @pytest.mark.parametrize("output", ["text", None, 42, [1, 2]], ids=["str", "none", "int", "list"])
    async def test_task_result_output_must_be_bytes(self, backend: PersistentBackend, output: object) -> None:
        await backend.save_snapshot(make_snapshot())
        with expect(InvalidArgumentError, f"save_task_result with output {output!r}"):
            await backend.save_task_result("wf-1", "t1", output)  # type: ignore[arg-type]
        assert await backend.load_task_result("wf-1", "t1") is None

    # -- load, delete, list ------------------------------------------------------------------
    async def test_load_missing(self, backend: PersistentBackend) -> None:
        with expect(NotFoundError, "load_snapshot of an instance that was never saved"):
            await backend.load_snapshot("missing")

    async def test_delete_removes_everything(self, backend: PersistentBackend, clock: ManualClock) -> None:
        await backend.save_snapshot(make_snapshot(position=AtFork("f", ["a", "b"])))
        await backend.save_task_result("wf-1", "a", b"out-a")
        assert await backend.claim_task("wf-1", "b", "w1", None) is not None
        await backend.request_cancellation("wf-1", "stop", "admin")
        await backend.delete_snapshot("wf-1")

        assert await backend.list_snapshots() == []
        with expect(NotFoundError, "load_snapshot after delete"):
            await backend.load_snapshot("wf-1")
        with expect(NotFoundError, "load_task_result after delete"):
            await backend.load_task_result("wf-1", "a")
        with expect(NotFoundError, "release_task_claim of a claim removed by delete"):
            await backend.release_task_claim("wf-1", "b", "w1")
        assert await backend.get_cancellation_request("wf-1") is None
        assert await backend.find_available_tasks("w", 10) == []
        with expect(NotFoundError, "deleting an already deleted snapshot"):
            await backend.delete_snapshot("wf-1")

        # A new instance under the same id starts from nothing.
        await backend.save_snapshot(make_snapshot(position=AtFork("f", ["a", "b"])))
        fresh = await backend.load_snapshot("wf-1")
        assert fresh.completed_tasks == {}, "results of a deleted instance came back"
        assert await backend.load_task_result("wf-1", "a") is None
        assert await backend.get_cancellation_request("wf-1") is None
        claim = await backend.claim_task("wf-1", "b", "w2", TTL)
        assert claim is not None, "a claim of a deleted instance still blocks the task"
        offered = {t.task_id for t in await backend.find_available_tasks("w", 10)}
        assert offered == {"a"}

    async def test_delete_missing(self, backend: PersistentBackend) -> None:
        with expect(NotFoundError, "delete_snapshot of an instance that was never saved"):
            await backend.delete_snapshot("missing")

    async def test_delete_touches_no_other_instance(self, backend: PersistentBackend) -> None:
        ids = ["a", "a/b", "a/", "ab", "a.json", "A", "b"]
        for instance_id in ids:
            await backend.save_snapshot(make_snapshot(instance_id))
            await backend.save_task_result(instance_id, "t0", instance_id.encode())
            assert await backend.claim_task(instance_id, "t1", "w", None) is not None
        await backend.delete_snapshot("a")
        assert await backend.list_snapshots() == sorted(set(ids) - {"a"})
        for instance_id in ids[1:]:
            assert await backend.load_task_result(instance_id, "t0") == instance_id.encode(), instance_id
            assert await backend.claim_task(instance_id, "t1", "w2", None) is None, (
                f"deleting 'a' removed the claim of {instance_id!r}"
            )

    async def test_list_empty(self, backend: PersistentBackend) -> None:
        assert await backend.list_snapshots() == []

    async def test_list_sorted(self, backend: PersistentBackend) -> None:
        ids = ["b", "a", "c/d", "C", "ä", "a b", "10", "9", "z" * 3, "😀", "中文"]
        for instance_id in ids:
            await backend.save_snapshot(make_snapshot(instance_id))
        listed = await backend.list_snapshots()
        assert listed == sorted(ids), "list_snapshots must return every id, sorted by code point"
        await backend.save_snapshot(make_snapshot("b", position=AtTask("again")))
        assert await backend.list_snapshots() == sorted(ids), "re-saving must not duplicate an id"

    async def test_terminal_and_not_started_are_listed(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(_not_started())
        done = _completed()
        done.instance_id = "wf-2"
        await backend.save_snapshot(done)
        assert await backend.list_snapshots() == ["wf-1", "wf-2"]

    async def test_not_started_state(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(_not_started())
        stored = await backend.load_snapshot("wf-1")
        assert stored.position == NotStarted() and isinstance(stored.state, InProgress)
        assert not isinstance(stored.state, (Completed, Failed))
