"""Conformance: durable delays, signals and pause/resume (issue 17), with their races."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import timedelta

import pytest

from objstore_wfp.clock import ManualClock
from objstore_wfp.contract import PersistentBackend
from objstore_wfp.errors import (
    BackendError,
    CannotPauseError,
    ClaimLostError,
    ConflictError,
    InvalidArgumentError,
    InvalidIdentifierError,
    NotFoundError,
)
from objstore_wfp.model import (
    AtDelay,
    AtSignal,
    AtTask,
    AvailableTask,
    Cancelled,
    PauseRequest,
    Signal,
    TaskClaim,
    WorkflowSnapshot,
)
from objstore_wfp.testing._support import ALL_BYTES, LARGE, TICK, TTL, expect, make_snapshot

SECOND = timedelta(seconds=1)


async def _offered(backend: PersistentBackend) -> list[tuple[str, str]]:
    return sorted((t.instance_id, t.task_id) for t in await backend.find_available_tasks("finder", 100))


async def _polled(backend: PersistentBackend, worker: str = "poller") -> list[tuple[str, str]]:
    """What a worker's poll claims (and lets go of again)."""
    won = await backend.claim_available(worker, 100, TTL)
    for task, _ in won:
        await backend.release_task_claim(task.instance_id, task.task_id, worker)
    return sorted((t.instance_id, t.task_id) for t, _ in won)


async def _claim(
    backend: PersistentBackend, task: str, instance: str = "wf-1", worker: str = "w1"
) -> TaskClaim:
    claim = await backend.claim_task(instance, task, worker, TTL)
    assert claim is not None, f"{worker} should have won the claim on {task!r} of {instance!r}"
    return claim


def _to(
    position: AtTask | AtDelay | AtSignal, done: str | None = None, output: bytes = b"out"
) -> Callable[[WorkflowSnapshot], bool]:
    """An ``advance`` for ``record_and_advance``: mark ``done`` completed and move to ``position``."""

    def advance(snapshot: WorkflowSnapshot) -> bool:
        if done is not None:
            snapshot.mark_task_completed(done, output)
        snapshot.update_position(position)
        return True

    return advance


async def _wait_for(backend: PersistentBackend, name: str, instance: str = "wf-1", step: str = "s1") -> None:
    await backend.save_snapshot(make_snapshot(instance, position=AtSignal(step, name)))


class WaitTests:
    """Delays, signals and pause: what is offered when, exactly-once delivery, and the races."""

    # -- delays --------------------------------------------------------------------------------
    async def test_delay_is_offered_from_its_wake_time(
        self, backend: PersistentBackend, clock: ManualClock
    ) -> None:
        wake = clock.now() + 10 * SECOND
        await backend.save_snapshot(make_snapshot(position=AtDelay("nap", wake), initial_input=b"in"))
        assert await _offered(backend) == [], "a delay was offered before its wake time"
        assert await _polled(backend) == [], "a poll claimed a delay before its wake time"
        clock.advance(10 * SECOND - TICK)
        assert await _offered(backend) == [], "a delay was offered a microsecond before its wake time"
        clock.advance(TICK)
        found = await backend.find_available_tasks("w", 10)
        assert found == [AvailableTask("wf-1", "nap", b"in", "def-1", 3)], found
        assert await _polled(backend) == [("wf-1", "nap")]
        claim = await _claim(backend, "nap")
        snapshot, _ = await backend.record_and_advance(claim, b"slept", _to(AtTask("t2"), "nap", b"slept"))
        assert snapshot.position == AtTask("t2")
        assert await _offered(backend) == [("wf-1", "t2")]

    async def test_delay_in_the_past_is_due_at_once(
        self, backend: PersistentBackend, clock: ManualClock
    ) -> None:
        await backend.save_snapshot(make_snapshot(position=AtDelay("nap", clock.now() - SECOND)))
        assert await _offered(backend) == [("wf-1", "nap")]

    async def test_delay_reached_by_a_worker(self, backend: PersistentBackend, clock: ManualClock) -> None:
        await backend.save_snapshot(make_snapshot())
        claim = await _claim(backend, "t1")
        wake = clock.now() + 60 * SECOND
        _, chained = await backend.record_and_advance(
            claim, b"one", _to(AtDelay("nap", wake), "t1", b"one"), reserve=TTL
        )
        assert chained == [], "a delay's step was handed to the worker before its wake time"
        assert await _offered(backend) == []
        clock.advance(60 * SECOND)
        found = await backend.find_available_tasks("w", 10)
        assert [(t.task_id, t.input) for t in found] == [("nap", b"one")], found

    async def test_due_delay_orders_by_wake_time(
        self, backend: PersistentBackend, clock: ManualClock
    ) -> None:
        start = clock.now()
        await backend.save_snapshot(make_snapshot("wf-late", position=AtDelay("nap", start + 5 * SECOND)))
        clock.advance(2 * SECOND)
        await backend.save_snapshot(make_snapshot("wf-task"))
        clock.advance(10 * SECOND)
        found = [t.instance_id for t in await backend.find_available_tasks("w", 10)]
        assert found == ["wf-task", "wf-late"], f"a delay is ready from its wake time: {found}"

    # -- signals -------------------------------------------------------------------------------
    async def test_send_and_list(self, backend: PersistentBackend, clock: ManualClock) -> None:
        await backend.save_snapshot(make_snapshot())
        first = await backend.send_signal("wf-1", "approve", ALL_BYTES)
        assert first == Signal("wf-1", "approve", ALL_BYTES, first.seq, clock.now()), first
        clock.advance(SECOND)
        other = await backend.send_signal("wf-1", "comment ✍", b"")
        second = await backend.send_signal("wf-1", "approve", bytearray(b"again"))  # type: ignore[arg-type]
        assert first.seq < other.seq < second.seq, "seq must increase with every signal of an instance"
        assert second.payload == b"again" and type(second.payload) is bytes
        assert await backend.list_signals("wf-1") == [first, other, second]
        assert await backend.list_signals("wf-1", "approve") == [first, second]
        assert await backend.list_signals("wf-1", "nothing") == []

    async def test_large_payload(self, backend: PersistentBackend) -> None:
        await _wait_for(backend, "big")
        await backend.send_signal("wf-1", "big", LARGE)
        [signal] = await backend.list_signals("wf-1")
        assert signal.payload == LARGE
        claim = await _claim(backend, "s1")
        assert await backend.deliver_signal(claim) == LARGE
        assert await backend.load_task_result("wf-1", "s1") == LARGE

    async def test_signal_errors(self, backend: PersistentBackend) -> None:
        with expect(NotFoundError, "send_signal to an instance that was never saved"):
            await backend.send_signal("missing", "approve", b"x")
        with expect(NotFoundError, "list_signals of an instance that was never saved"):
            await backend.list_signals("missing")
        await backend.save_snapshot(make_snapshot())
        for name in ["", "a\x00b", 7, None]:
            with expect(InvalidIdentifierError, f"send_signal with name {name!r}"):
                await backend.send_signal("wf-1", name, b"x")  # type: ignore[arg-type]
        for payload in ["text", None, 5]:
            with expect(InvalidArgumentError, f"send_signal with payload {payload!r}"):
                await backend.send_signal("wf-1", "approve", payload)  # type: ignore[arg-type]
        with expect(InvalidIdentifierError, "list_signals with an illegal name"):
            await backend.list_signals("wf-1", "")
        assert await backend.list_signals("wf-1") == [], "a refused signal was stored"

    @pytest.mark.parametrize("terminal", ["completed", "failed", "cancelled"])
    async def test_no_signals_to_final_instances(self, backend: PersistentBackend, terminal: str) -> None:
        snapshot = make_snapshot()
        await backend.save_snapshot(snapshot)
        if terminal == "cancelled":
            await backend.request_cancellation("wf-1", "stop", "admin")
            assert await backend.check_and_cancel("wf-1")
        else:
            snapshot.mark_completed(b"done") if terminal == "completed" else snapshot.mark_failed("boom")
            await backend.save_snapshot(snapshot)
        with expect(ConflictError, f"send_signal to a {terminal} instance"):
            await backend.send_signal("wf-1", "approve", b"x")

    async def test_wait_is_offered_once_its_signal_comes(self, backend: PersistentBackend) -> None:
        await _wait_for(backend, "approve")
        assert await _offered(backend) == [], "a wait was offered before its signal came"
        await backend.send_signal("wf-1", "other", b"x")
        assert await _offered(backend) == [], "a signal of another name woke the wait"
        assert await _polled(backend) == []
        await backend.send_signal("wf-1", "approve", b"yes")
        assert await _offered(backend) == [("wf-1", "s1")]
        claim = await _claim(backend, "s1")
        assert await backend.deliver_signal(claim) == b"yes"
        assert await backend.load_task_result("wf-1", "s1") == b"yes"
        assert [s.name for s in await backend.list_signals("wf-1")] == ["other"], "delivered, not consumed"
        assert await backend.deliver_signal(claim) == b"yes", "a retried delivery must return the result"
        assert await _offered(backend) == [], "a wait whose step has its result is still offered"
        snapshot, _ = await backend.record_and_advance(claim, b"yes", _to(AtTask("t2"), "s1", b"yes"))
        assert await _offered(backend) == [("wf-1", "t2")]
        assert snapshot.task_input() == b"yes"

    async def test_signal_sent_before_the_wait_is_buffered(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        sent = await backend.send_signal("wf-1", "approve", b"early")
        assert await _offered(backend) == [("wf-1", "t1")]
        claim = await _claim(backend, "t1")
        await backend.record_and_advance(claim, b"one", _to(AtSignal("s1", "approve"), "t1", b"one"))
        assert await backend.list_signals("wf-1") == [sent]
        found = await backend.find_available_tasks("w", 10)
        assert [(t.task_id, t.input) for t in found] == [("s1", b"one")], found
        assert await backend.deliver_signal(await _claim(backend, "s1")) == b"early"
        assert await backend.list_signals("wf-1") == []

    async def test_timeout(self, backend: PersistentBackend, clock: ManualClock) -> None:
        timeout = clock.now() + 30 * SECOND
        await backend.save_snapshot(make_snapshot(position=AtSignal("s1", "approve", timeout)))
        clock.advance(30 * SECOND - TICK)
        assert await _offered(backend) == [], "a wait was offered before its timeout"
        clock.advance(TICK)
        assert await _offered(backend) == [("wf-1", "s1")], "a timed-out wait was not offered"
        claim = await _claim(backend, "s1")
        assert await backend.deliver_signal(claim) is None
        await backend.record_and_advance(claim, b"timed out", _to(AtTask("t2"), "s1", b"timed out"))
        late = await backend.send_signal("wf-1", "approve", b"late")
        assert await backend.list_signals("wf-1") == [late], "a signal after the timeout is kept pending"
        assert await _offered(backend) == [("wf-1", "t2")]

    async def test_signal_before_timeout_wins(self, backend: PersistentBackend, clock: ManualClock) -> None:
        await backend.save_snapshot(make_snapshot(position=AtSignal("s1", "approve", clock.now() + SECOND)))
        await backend.send_signal("wf-1", "approve", b"in time")
        clock.advance(2 * SECOND)
        assert await _offered(backend) == [("wf-1", "s1")]
        assert await backend.deliver_signal(await _claim(backend, "s1")) == b"in time"

    async def test_many_signals_of_one_name_in_order(self, backend: PersistentBackend) -> None:
        await _wait_for(backend, "item", step="s0")
        payloads = [f"item {i}".encode() for i in range(6)]
        sent = [await backend.send_signal("wf-1", "item", p) for p in payloads]
        assert [s.seq for s in sent] == sorted({s.seq for s in sent}), sent
        delivered = []
        for i in range(len(payloads)):
            assert await _offered(backend) == [("wf-1", f"s{i}")]
            claim = await _claim(backend, f"s{i}")
            payload = await backend.deliver_signal(claim)
            assert payload is not None
            delivered.append(payload)
            nxt = AtSignal(f"s{i + 1}", "item")
            await backend.record_and_advance(claim, payload, _to(nxt, f"s{i}", payload))
        assert delivered == payloads, "signals of one name must be delivered once each, in order"
        assert await _offered(backend) == [] and await backend.list_signals("wf-1") == []

    async def test_concurrent_sends(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        sent = await asyncio.gather(*(backend.send_signal("wf-1", "n", bytes([i])) for i in range(12)))
        assert len({s.seq for s in sent}) == 12, f"two signals got one seq: {sorted(s.seq for s in sent)}"
        listed = await backend.list_signals("wf-1")
        assert sorted(s.payload for s in listed) == [bytes([i]) for i in range(12)]
        assert [s.seq for s in listed] == sorted(s.seq for s in listed)

    async def test_deliveries_are_exactly_once(self, backend: PersistentBackend) -> None:
        await _wait_for(backend, "approve")
        await backend.send_signal("wf-1", "approve", b"one")
        await backend.send_signal("wf-1", "approve", b"two")
        claim = await _claim(backend, "s1")
        outcomes = await asyncio.gather(*(backend.deliver_signal(claim) for _ in range(8)))
        assert set(outcomes) == {b"one"}, f"concurrent deliveries to one step disagree: {outcomes}"
        assert [s.payload for s in await backend.list_signals("wf-1")] == [b"two"]

    async def test_delivery_is_fenced(self, backend: PersistentBackend, clock: ManualClock) -> None:
        await _wait_for(backend, "approve")
        await backend.send_signal("wf-1", "approve", b"yes")
        stale = await _claim(backend, "s1")
        clock.advance(TTL)
        fresh = await _claim(backend, "s1", worker="w2")
        with expect(ClaimLostError, "deliver_signal with a claim taken over"):
            await backend.deliver_signal(stale)
        assert len(await backend.list_signals("wf-1")) == 1, "a refused delivery consumed the signal"
        assert await backend.deliver_signal(fresh) == b"yes"

    async def test_delivery_needs_a_signal_wait(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        await backend.send_signal("wf-1", "approve", b"yes")
        with expect(ConflictError, "deliver_signal for a step that is not at AtSignal"):
            await backend.deliver_signal(await _claim(backend, "t1"))
        await backend.save_snapshot(make_snapshot("wf-2", position=AtSignal("s1", "approve")))
        with expect(ConflictError, "deliver_signal for another step than the wait's"):
            await backend.deliver_signal(await _claim(backend, "other", "wf-2"))
        with expect(InvalidArgumentError, "deliver_signal without a claim"):
            await backend.deliver_signal(None)  # type: ignore[arg-type]
        assert len(await backend.list_signals("wf-1")) == 1

    async def test_signal_racing_the_wait(self, backend: PersistentBackend) -> None:
        """A signal sent while the workflow reaches its wait is delivered, whichever lands first."""
        for i in range(4):
            instance = f"wf-race-{i}"
            await backend.save_snapshot(make_snapshot(instance))
            claim = await _claim(backend, "t1", instance)
            advance = _to(AtSignal("s1", "go"), "t1", b"one")
            if i % 2:
                await asyncio.gather(
                    backend.send_signal(instance, "go", b"now"),
                    backend.record_and_advance(claim, b"one", advance),
                )
            else:
                await asyncio.gather(
                    backend.record_and_advance(claim, b"one", advance),
                    backend.send_signal(instance, "go", b"now"),
                )
            assert (instance, "s1") in await _offered(backend), f"{instance}: the wait was not woken"
            assert await backend.deliver_signal(await _claim(backend, "s1", instance)) == b"now"

    async def test_signals_survive_saves(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        sent = await backend.send_signal("wf-1", "approve", b"x")
        loaded = await backend.load_snapshot("wf-1")
        loaded.update_position(AtTask("t2"))
        await backend.save_snapshot(loaded)
        await backend.save_snapshot(make_snapshot(position=AtTask("t3")))  # a blind overwrite
        assert await backend.list_signals("wf-1") == [sent], "saving a snapshot dropped a signal"

    async def test_delete_removes_signals(self, backend: PersistentBackend) -> None:
        await _wait_for(backend, "approve")
        await backend.send_signal("wf-1", "approve", b"old")
        await backend.delete_snapshot("wf-1")
        await _wait_for(backend, "approve")
        assert await backend.list_signals("wf-1") == [], "a signal outlived its instance"
        assert await _offered(backend) == [], "a deleted instance's signal woke its successor"

    async def test_delete_racing_signals(self, backend: PersistentBackend) -> None:
        await _wait_for(backend, "approve")

        async def send(i: int) -> Signal | None:
            try:
                return await backend.send_signal("wf-1", "approve", bytes([i]))
            except NotFoundError:
                return None

        await asyncio.gather(*(send(i) for i in range(5)), backend.delete_snapshot("wf-1"))
        await _wait_for(backend, "approve")
        assert await backend.list_signals("wf-1") == [], "a signal outlived its instance"
        assert await _offered(backend) == [] and await _polled(backend) == []
        sent = await backend.send_signal("wf-1", "approve", b"new")
        assert await backend.list_signals("wf-1") == [sent]
        assert await backend.deliver_signal(await _claim(backend, "s1")) == b"new"

    # -- pause ---------------------------------------------------------------------------------
    async def test_pause_and_resume(self, backend: PersistentBackend, clock: ManualClock) -> None:
        await backend.save_snapshot(make_snapshot())
        assert await backend.get_pause_request("wf-1") is None
        await backend.pause_instance("wf-1", "maintenance ✋", "ops@example.com")
        expected = PauseRequest("maintenance ✋", "ops@example.com", clock.now())
        assert await backend.get_pause_request("wf-1") == expected
        assert await _offered(backend) == [], "a paused instance's task was offered"
        assert await _polled(backend) == [], "a poll claimed a paused instance's task"
        clock.advance(SECOND)
        await backend.pause_instance("wf-1", "again", "someone")
        assert await backend.get_pause_request("wf-1") == expected, "pausing again must keep the request"
        loaded = await backend.load_snapshot("wf-1")
        await backend.save_snapshot(loaded)
        assert await backend.get_pause_request("wf-1") == expected, "saving a snapshot dropped the pause"
        await backend.resume_instance("wf-1")
        assert await backend.get_pause_request("wf-1") is None
        assert await _offered(backend) == [("wf-1", "t1")]
        await backend.resume_instance("wf-1")  # not paused: a no-op
        assert await _offered(backend) == [("wf-1", "t1")]

    async def test_pause_errors(self, backend: PersistentBackend) -> None:
        with expect(NotFoundError, "pause_instance of an instance that was never saved"):
            await backend.pause_instance("missing", "r", "me")
        with expect(NotFoundError, "resume_instance of an instance that was never saved"):
            await backend.resume_instance("missing")
        assert await backend.get_pause_request("missing") is None
        with expect(InvalidIdentifierError, "pause_instance with an illegal id"):
            await backend.pause_instance("", "r", "me")
        await backend.save_snapshot(make_snapshot())
        with expect(InvalidArgumentError, "pause_instance with a reason that is not text"):
            await backend.pause_instance("wf-1", None, "me")  # type: ignore[arg-type]

    @pytest.mark.parametrize("terminal", ["completed", "failed", "cancelled"])
    async def test_cannot_pause_final(self, backend: PersistentBackend, terminal: str) -> None:
        snapshot = make_snapshot()
        await backend.save_snapshot(snapshot)
        if terminal == "cancelled":
            await backend.request_cancellation("wf-1", "stop", "admin")
            assert await backend.check_and_cancel("wf-1")
        else:
            snapshot.mark_completed(b"done") if terminal == "completed" else snapshot.mark_failed("boom")
            await backend.save_snapshot(snapshot)
        with expect(CannotPauseError, f"pause_instance of a {terminal} instance"):
            await backend.pause_instance("wf-1", "r", "me")
        assert await backend.get_pause_request("wf-1") is None
        await backend.resume_instance("wf-1")  # nothing to resume: a no-op

    async def test_paused_waits_are_held(self, backend: PersistentBackend, clock: ManualClock) -> None:
        await backend.save_snapshot(make_snapshot("wf-d", position=AtDelay("nap", clock.now() + SECOND)))
        await _wait_for(backend, "approve", "wf-s")
        await backend.pause_instance("wf-d", "r", "me")
        await backend.pause_instance("wf-s", "r", "me")
        clock.advance(2 * SECOND)
        await backend.send_signal("wf-s", "approve", b"yes")
        assert await _offered(backend) == [] and await _polled(backend) == []
        await backend.resume_instance("wf-d")
        await backend.resume_instance("wf-s")
        assert await _offered(backend) == [("wf-d", "nap"), ("wf-s", "s1")]

    async def test_running_task_finishes_while_paused(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        claim = await _claim(backend, "t1")
        await backend.pause_instance("wf-1", "r", "me")
        snapshot, chained = await backend.record_and_advance(
            claim, b"one", _to(AtTask("t2"), "t1", b"one"), reserve=TTL
        )
        assert snapshot.position == AtTask("t2") and await backend.load_task_result("wf-1", "t1") == b"one"
        assert chained == [], "record_and_advance handed out a paused instance's next task"
        assert await _offered(backend) == [], "a paused instance offered the task it advanced to"
        await backend.resume_instance("wf-1")
        assert await _offered(backend) == [("wf-1", "t2")]

    async def test_pause_racing_completion(self, backend: PersistentBackend) -> None:
        """Pause racing a task's completion: both land, and nothing is offered afterwards."""
        for i in range(4):
            instance = f"wf-race-{i}"
            await backend.save_snapshot(make_snapshot(instance))
            claim = await _claim(backend, "t1", instance)
            record = backend.record_and_advance(claim, b"one", _to(AtTask("t2"), "t1", b"one"))
            pause = backend.pause_instance(instance, "r", "me")
            await (asyncio.gather(record, pause) if i % 2 else asyncio.gather(pause, record))
            assert (await backend.load_snapshot(instance)).position == AtTask("t2")
            assert await backend.get_pause_request(instance) is not None
        assert await _offered(backend) == []

    async def test_pause_racing_the_end(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        claim = await _claim(backend, "t1")

        def finish(snapshot: WorkflowSnapshot) -> bool:
            snapshot.mark_completed(b"done")
            return True

        async def pause() -> None:
            with contextlib.suppress(CannotPauseError):
                await backend.pause_instance("wf-1", "r", "me")

        await asyncio.gather(pause(), backend.record_and_advance(claim, b"one", finish))
        assert (await backend.load_snapshot("wf-1")).is_terminal
        assert await backend.get_pause_request("wf-1") is None, "a final instance has no pause request"

    async def test_cancel_wins_over_pause(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        await backend.pause_instance("wf-1", "r", "me")
        await backend.request_cancellation("wf-1", "stop", "admin")
        assert await backend.check_and_cancel("wf-1") is True
        assert isinstance((await backend.load_snapshot("wf-1")).state, Cancelled)
        assert await backend.get_pause_request("wf-1") is None

    async def test_resume_racing_cancel(self, backend: PersistentBackend) -> None:
        for i in range(4):
            instance = f"wf-race-{i}"
            await backend.save_snapshot(make_snapshot(instance))
            await backend.pause_instance(instance, "r", "me")
            await backend.request_cancellation(instance, "stop", "admin")
            resume, cancel = backend.resume_instance(instance), backend.check_and_cancel(instance)
            outcomes = await (asyncio.gather(resume, cancel) if i % 2 else asyncio.gather(cancel, resume))
            assert True in outcomes, f"{instance}: the cancellation was lost"
            assert isinstance((await backend.load_snapshot(instance)).state, Cancelled)
            assert await backend.get_pause_request(instance) is None
        assert await _offered(backend) == []

    async def test_delete_removes_pause(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        await backend.pause_instance("wf-1", "r", "me")
        await backend.delete_snapshot("wf-1")
        assert await backend.get_pause_request("wf-1") is None
        await backend.save_snapshot(make_snapshot())
        assert await backend.get_pause_request("wf-1") is None, "a pause outlived its instance"
        assert await _offered(backend) == [("wf-1", "t1")]

    async def test_errors_are_backend_errors(self, backend: PersistentBackend) -> None:
        calls = [
            backend.send_signal("missing", "n", b""),
            backend.list_signals("missing"),
            backend.pause_instance("missing", "", ""),
            backend.resume_instance("missing"),
        ]
        for call in calls:
            with pytest.raises(BackendError):
                await call
