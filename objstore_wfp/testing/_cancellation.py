"""Conformance: cancellation requests and ``check_and_cancel``."""

from __future__ import annotations

import asyncio

import pytest

from objstore_wfp.clock import ManualClock
from objstore_wfp.contract import PersistentBackend
from objstore_wfp.errors import CannotCancelError, ConflictError, NotFoundError
from objstore_wfp.model import AtFork, CancellationRequest, Cancelled, InProgress, TaskResult
from objstore_wfp.testing._support import TICK, expect, make_snapshot


class CancellationTests:
    """Cancellation: requests, the atomic transition to Cancelled, and the error cases."""

    async def test_request_get_clear(self, backend: PersistentBackend, clock: ManualClock) -> None:
        await backend.save_snapshot(make_snapshot())
        assert await backend.get_cancellation_request("wf-1") is None
        await backend.request_cancellation("wf-1", "user asked ✋", "admin@example.com")
        request = await backend.get_cancellation_request("wf-1")
        assert request == CancellationRequest("wf-1", "user asked ✋", "admin@example.com", clock.now()), (
            request
        )
        await backend.clear_cancellation_request("wf-1")
        assert await backend.get_cancellation_request("wf-1") is None
        await backend.clear_cancellation_request("wf-1")  # clearing nothing is fine
        stored = await backend.load_snapshot("wf-1")
        assert isinstance(stored.state, InProgress), "a request alone must not change the state"

    async def test_free_text_round_trips(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        reason = 'line 1\nline 2\t\x00 "quoted" ü 😀 ' + "x" * 10_000
        await backend.request_cancellation("wf-1", reason, "")
        request = await backend.get_cancellation_request("wf-1")
        assert request is not None and (request.reason, request.requested_by) == (reason, "")
        assert await backend.check_and_cancel("wf-1")
        stored = await backend.load_snapshot("wf-1")
        assert isinstance(stored.state, Cancelled) and stored.state.reason == reason

    async def test_request_replaces_request(self, backend: PersistentBackend, clock: ManualClock) -> None:
        await backend.save_snapshot(make_snapshot())
        await backend.request_cancellation("wf-1", "first", "alice")
        clock.advance(TICK)
        await backend.request_cancellation("wf-1", "second", "bob")
        request = await backend.get_cancellation_request("wf-1")
        assert request == CancellationRequest("wf-1", "second", "bob", clock.now()), request

    async def test_request_survives_snapshot_saves(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        await backend.request_cancellation("wf-1", "stop", "admin")
        loaded = await backend.load_snapshot("wf-1")
        loaded.mark_task_completed("t1", b"out")
        await backend.save_snapshot(loaded)
        assert await backend.get_cancellation_request("wf-1") is not None, (
            "saving a snapshot dropped the request"
        )

    async def test_unknown_instance(self, backend: PersistentBackend) -> None:
        with expect(NotFoundError, "request_cancellation of an instance that was never saved"):
            await backend.request_cancellation("missing", "stop", "admin")
        with expect(NotFoundError, "check_and_cancel of an instance that was never saved"):
            await backend.check_and_cancel("missing")
        assert await backend.get_cancellation_request("missing") is None
        await backend.clear_cancellation_request("missing")
        assert await backend.list_snapshots() == []

    @pytest.mark.parametrize("terminal", ["completed", "failed"])
    async def test_cannot_cancel_finished(self, backend: PersistentBackend, terminal: str) -> None:
        snapshot = make_snapshot()
        if terminal == "completed":
            snapshot.mark_completed(b"done")
        else:
            snapshot.mark_failed("boom")
        await backend.save_snapshot(snapshot)
        with expect(CannotCancelError, f"request_cancellation of a {terminal} instance"):
            await backend.request_cancellation("wf-1", "stop", "admin")
        assert await backend.get_cancellation_request("wf-1") is None

    async def test_request_on_cancelled_is_a_no_op(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        await backend.request_cancellation("wf-1", "stop", "admin")
        assert await backend.check_and_cancel("wf-1")
        before = await backend.load_snapshot("wf-1")
        await backend.request_cancellation("wf-1", "again", "someone")
        assert await backend.get_cancellation_request("wf-1") is None
        assert await backend.check_and_cancel("wf-1") is False
        after = await backend.load_snapshot("wf-1")
        assert after == before and after.version == before.version

    async def test_check_without_request(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        version = (await backend.load_snapshot("wf-1")).version
        assert await backend.check_and_cancel("wf-1") is False
        after = await backend.load_snapshot("wf-1")
        assert isinstance(after.state, InProgress) and after.version == version

    async def test_check_and_cancel(self, backend: PersistentBackend, clock: ManualClock) -> None:
        snapshot = make_snapshot(position=AtFork("f", ["a", "b", "c"]))
        snapshot.mark_task_completed("before", b"out-before")
        snapshot.update_position(AtFork("f", ["a", "b", "c"]))
        await backend.save_snapshot(snapshot)
        await backend.save_task_result("wf-1", "a", b"out-a")
        await backend.request_cancellation("wf-1", "user asked", "admin")
        clock.advance(TICK)
        stale = await backend.load_snapshot("wf-1")
        assert await backend.check_and_cancel("wf-1", interrupted_at_task="b") is True
        stored = await backend.load_snapshot("wf-1")
        assert stored.state == Cancelled(
            "user asked",
            "admin",
            clock.now(),
            {"before": TaskResult("before", b"out-before"), "a": TaskResult("a", b"out-a")},
            "b",
        ), stored.state
        assert stored.is_terminal
        assert await backend.get_cancellation_request("wf-1") is None, (
            "check_and_cancel must clear the request"
        )
        assert await backend.check_and_cancel("wf-1") is False
        assert await backend.load_task_result("wf-1", "a") == b"out-a"
        assert stored.version != stale.version, "cancelling must change the version"
        stale.update_position(AtFork("f", ["c"]))
        with expect(ConflictError, "CAS save over a cancelled instance"):
            await backend.save_snapshot(stale)

    async def test_check_and_cancel_without_task(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        await backend.request_cancellation("wf-1", "stop", "admin")
        assert await backend.check_and_cancel("wf-1") is True
        stored = await backend.load_snapshot("wf-1")
        assert isinstance(stored.state, Cancelled) and stored.state.interrupted_at_task is None

    async def test_request_left_on_finished_instance(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        await backend.request_cancellation("wf-1", "stop", "admin")
        loaded = await backend.load_snapshot("wf-1")
        loaded.mark_completed(b"done")
        await backend.save_snapshot(loaded)
        assert await backend.check_and_cancel("wf-1") is False, (
            "a completed instance must not become Cancelled"
        )
        stored = await backend.load_snapshot("wf-1")
        assert not isinstance(stored.state, Cancelled)
        assert await backend.get_cancellation_request("wf-1") is None, "the leftover request must be cleared"

    async def test_concurrent_check_and_cancel(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        await backend.request_cancellation("wf-1", "stop", "admin")
        outcomes = await asyncio.gather(*(backend.check_and_cancel("wf-1") for _ in range(10)))
        assert outcomes.count(True) == 1, f"exactly one check_and_cancel must win, got {outcomes}"
