"""Conformance: ``find_available_tasks`` (what is offered, in which order, with which input)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from objstore_wfp.clock import ManualClock
from objstore_wfp.contract import PersistentBackend
from objstore_wfp.errors import InvalidArgumentError
from objstore_wfp.model import AtFork, AtJoin, AtTask, AvailableTask, WorkflowSnapshot
from objstore_wfp.testing._support import LARGE, TTL, expect, make_snapshot

SECOND = timedelta(seconds=1)


async def _offered(backend: PersistentBackend, limit: int = 100) -> list[tuple[str, str]]:
    return [(t.instance_id, t.task_id) for t in await backend.find_available_tasks("finder", limit)]


class FindingTests:
    """Finding work: availability, exclusions, order, limit and task inputs."""

    async def test_nothing_to_find(self, backend: PersistentBackend) -> None:
        assert await backend.find_available_tasks("w", 10) == []

    async def test_at_task_is_offered(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot(initial_input=b"in", priority=2, definition_hash="def-x"))
        found = await backend.find_available_tasks("w", 10)
        assert found == [AvailableTask("wf-1", "t1", b"in", "def-x", 2)], found

    async def test_not_started_and_join_offer_nothing(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(WorkflowSnapshot("wf-1", "def-1"))
        await backend.save_snapshot(make_snapshot("wf-2", position=AtJoin("j", ["a", "b"])))
        assert await _offered(backend) == []

    async def test_fork_offers_unfinished_branches(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot(position=AtFork("f", ["a", "b", "c", "d"], ["d"])))
        assert sorted(await _offered(backend)) == [("wf-1", "a"), ("wf-1", "b"), ("wf-1", "c")]
        await backend.save_task_result("wf-1", "b", b"out-b")
        assert sorted(await _offered(backend)) == [("wf-1", "a"), ("wf-1", "c")], (
            "a branch with a recorded result is still offered"
        )
        assert await backend.claim_task("wf-1", "a", "w1", TTL) is not None
        assert await _offered(backend) == [("wf-1", "c")], "a claimed branch is still offered"

    async def test_completed_task_is_not_offered(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        await backend.save_task_result("wf-1", "t1", b"out")
        assert await _offered(backend) == [], "a task with a recorded result is still offered"
        done_in_snapshot = make_snapshot("wf-2", position=AtTask("t1"))
        done_in_snapshot.mark_task_completed("t1", b"out")
        done_in_snapshot.update_position(AtTask("t1"))
        await backend.save_snapshot(done_in_snapshot)
        assert await _offered(backend) == [], "a task completed in the saved snapshot is offered"

    async def test_claims_hide_tasks_until_released_or_expired(
        self, backend: PersistentBackend, clock: ManualClock
    ) -> None:
        await backend.save_snapshot(make_snapshot())
        await backend.claim_task("wf-1", "t1", "w1", TTL)
        assert await _offered(backend) == [], "a task under a live claim is offered"
        clock.advance(TTL)
        assert await _offered(backend) == [("wf-1", "t1")], "a task whose claim expired is not offered again"
        await backend.claim_task("wf-1", "t1", "w2", None)
        clock.advance(TTL * 1000)
        assert await _offered(backend) == [], "a task under a claim without TTL is offered"
        await backend.release_task_claim("wf-1", "t1", "w2")
        assert await _offered(backend) == [("wf-1", "t1")], "a released task is not offered again"

    @pytest.mark.parametrize("terminal", ["completed", "failed", "cancelled"])
    async def test_terminal_instances_offer_nothing(self, backend: PersistentBackend, terminal: str) -> None:
        await backend.save_snapshot(make_snapshot())
        loaded = await backend.load_snapshot("wf-1")
        if terminal == "completed":
            loaded.mark_completed(b"done")
            await backend.save_snapshot(loaded)
        elif terminal == "failed":
            loaded.mark_failed("boom")
            await backend.save_snapshot(loaded)
        else:
            await backend.request_cancellation("wf-1", "stop", "admin")
            assert await backend.check_and_cancel("wf-1")
        assert await _offered(backend) == [], f"a {terminal} instance still offers its task"

    async def test_pending_cancellation_hides_instance(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot(position=AtFork("f", ["a", "b"])))
        await backend.save_snapshot(make_snapshot("wf-2"))
        await backend.request_cancellation("wf-1", "stop", "admin")
        assert await _offered(backend) == [("wf-2", "t1")], (
            "an instance with a pending cancellation is offered"
        )
        await backend.clear_cancellation_request("wf-1")
        assert sorted(await _offered(backend)) == [("wf-1", "a"), ("wf-1", "b"), ("wf-2", "t1")]

    async def test_position_moves_are_followed(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        loaded = await backend.load_snapshot("wf-1")
        loaded.mark_task_completed("t1", b"out-1")
        loaded.update_position(AtTask("t2"))
        await backend.save_snapshot(loaded)
        assert await _offered(backend) == [("wf-1", "t2")]
        loaded.update_position(AtJoin("j"))
        await backend.save_snapshot(loaded)
        assert await _offered(backend) == [], "a task the workflow moved away from is still offered"

    async def test_priority_first(self, backend: PersistentBackend, clock: ManualClock) -> None:
        for name, priority in [("p5", 5), ("p1", 1), ("p3", 3), ("p2", 2), ("p4", 4)]:
            await backend.save_snapshot(make_snapshot(name, priority=priority))
            clock.advance(SECOND)
        found = await backend.find_available_tasks("w", 10)
        assert [t.instance_id for t in found] == ["p1", "p2", "p3", "p4", "p5"], "most urgent priority first"
        assert [t.priority for t in found] == [1, 2, 3, 4, 5]

    async def test_oldest_ready_first(self, backend: PersistentBackend, clock: ManualClock) -> None:
        # Names sort against readiness, so ordering by id would fail.
        for name in ["z-oldest", "m-middle", "a-newest"]:
            await backend.save_snapshot(make_snapshot(name))
            clock.advance(SECOND)
        assert [i for i, _ in await _offered(backend)] == ["z-oldest", "m-middle", "a-newest"]
        # Saving again without changing what is offered keeps the task's place.
        oldest = await backend.load_snapshot("z-oldest")
        oldest.definition_hash = "def-2"
        await backend.save_snapshot(oldest)
        assert [i for i, _ in await _offered(backend)] == ["z-oldest", "m-middle", "a-newest"], (
            "re-saving a snapshot reset the ready time of a task it kept offering"
        )
        # A task that becomes ready later queues behind the others.
        oldest.mark_task_completed("t1", b"out")
        oldest.update_position(AtTask("t2"))
        await backend.save_snapshot(oldest)
        assert await _offered(backend) == [("m-middle", "t1"), ("a-newest", "t1"), ("z-oldest", "t2")]

    async def test_ties_break_by_instance_then_task(self, backend: PersistentBackend) -> None:
        # Same priority, same ready time (the clock does not move): instance id, then task id.
        branches = ["f", "b", "e", "a", "d", "c"]
        for instance_id in ["wf-2", "wf-3", "wf-1"]:
            await backend.save_snapshot(make_snapshot(instance_id, position=AtFork("fork", branches)))
        expected = [(i, t) for i in ["wf-1", "wf-2", "wf-3"] for t in sorted(branches)]
        assert await _offered(backend) == expected, (
            "tasks that became ready at the same time must come by instance id, then task id"
        )
        assert await _offered(backend, limit=4) == expected[:4]

    async def test_priority_beats_age(self, backend: PersistentBackend, clock: ManualClock) -> None:
        await backend.save_snapshot(make_snapshot("old-lazy", priority=5))
        clock.advance(SECOND * 60)
        await backend.save_snapshot(make_snapshot("new-urgent", priority=1))
        assert [i for i, _ in await _offered(backend)] == ["new-urgent", "old-lazy"]

    async def test_limit(self, backend: PersistentBackend, clock: ManualClock) -> None:
        for n in range(12):
            await backend.save_snapshot(make_snapshot(f"wf-{n:02d}", priority=5 - n % 5))
            clock.advance(SECOND)
        everything = await backend.find_available_tasks("w", 100)
        assert len(everything) == 12
        for limit in (1, 3, 7, 12, 13):
            found = await backend.find_available_tasks("w", limit)
            assert found == everything[:limit], f"limit={limit} must give the first {limit} tasks in order"
        assert await backend.find_available_tasks("w", 0) == [], "limit=0 must return []"

    @pytest.mark.parametrize("limit", [-1, 2.5, "3", None], ids=["negative", "float", "str", "none"])
    async def test_bad_limit(self, backend: PersistentBackend, limit: object) -> None:
        await backend.save_snapshot(make_snapshot())
        with expect(InvalidArgumentError, f"find_available_tasks with limit={limit!r}"):
            await backend.find_available_tasks("w", limit)  # type: ignore[arg-type]

    async def test_input_is_initial_then_last_output(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot(initial_input=b"initial"))
        [task] = await backend.find_available_tasks("w", 10)
        assert task.input == b"initial", "before any completion the input is the initial input"
        loaded = await backend.load_snapshot("wf-1")
        loaded.mark_task_completed("t1", b"out-1")
        loaded.update_position(AtTask("t2"))
        await backend.save_snapshot(loaded)
        [task] = await backend.find_available_tasks("w", 10)
        assert task.input == b"out-1", "the input is the output of the last completed task"
        loaded.mark_task_completed("t2", b"")
        loaded.update_position(AtTask("t3"))
        await backend.save_snapshot(loaded)
        [task] = await backend.find_available_tasks("w", 10)
        assert task.input == b"", "an empty output is a real input, not a missing one"

    @pytest.mark.parametrize("initial", [None, b"", b"\x00\xff" * 3], ids=["none", "empty", "binary"])
    async def test_initial_input_variants(self, backend: PersistentBackend, initial: bytes | None) -> None:
        await backend.save_snapshot(make_snapshot(initial_input=initial))
        [task] = await backend.find_available_tasks("w", 10)
        assert task.input == initial

    async def test_fork_branches_keep_pre_fork_input(self, backend: PersistentBackend) -> None:
        snapshot = make_snapshot(position=AtTask("prepare"))
        snapshot.mark_task_completed("prepare", b"prepared")
        snapshot.update_position(AtFork("f", ["a", "b", "c"]))
        await backend.save_snapshot(snapshot)
        await backend.save_task_result("wf-1", "a", b"out-a")
        found = await backend.find_available_tasks("w", 10)
        assert sorted(t.task_id for t in found) == ["b", "c"]
        assert all(t.input == b"prepared" for t in found), (
            f"fork branches must all get the pre-fork output, got {[t.input for t in found]}"
        )

    async def test_large_inputs_are_passed_whole(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot("first", initial_input=LARGE))
        second = make_snapshot("second", position=AtTask("t1"))
        second.mark_task_completed("t1", LARGE[::-1])
        second.update_position(AtTask("t2"))
        await backend.save_snapshot(second)
        found = {t.instance_id: t.input for t in await backend.find_available_tasks("w", 10)}
        assert found.get("first") == LARGE, "a large initial input was not passed whole"
        assert found.get("second") == LARGE[::-1], (
            "a large task output was not passed whole as the next input"
        )

    async def test_finding_does_not_claim(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot(position=AtFork("f", ["a", "b"])))
        first = await backend.find_available_tasks("w1", 10)
        second = await backend.find_available_tasks("w2", 10)
        assert sorted(first, key=repr) == sorted(second, key=repr), "find_available_tasks must not claim"
        assert len({(t.instance_id, t.task_id) for t in first}) == len(first) == 2, "duplicates offered"
        assert await backend.claim_task("wf-1", "a", "w2", TTL) is not None

    async def test_many_instances(self, backend: PersistentBackend, clock: ManualClock) -> None:
        expected = []
        for n in range(40):
            priority = 1 + n % 5
            await backend.save_snapshot(make_snapshot(f"wf-{n:02d}", priority=priority))
            expected.append((priority, n, f"wf-{n:02d}"))
            clock.advance(SECOND)
        expected.sort()
        found = await backend.find_available_tasks("w", 10)
        assert [t.instance_id for t in found] == [name for _, _, name in expected[:10]]
