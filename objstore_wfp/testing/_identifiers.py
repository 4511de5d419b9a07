"""Conformance: identifier rules, other argument checks and the error family."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from objstore_wfp.contract import PersistentBackend
from objstore_wfp.errors import (
    BackendError,
    CannotCancelError,
    CannotPauseError,
    ClaimLostError,
    ConflictError,
    InvalidArgumentError,
    InvalidIdentifierError,
    NotFoundError,
    SerializationError,
    StoreUnavailableError,
    UnsupportedStoreError,
)
from objstore_wfp.model import AtDelay, AtFork, AtSignal, AtTask, TaskResult, WorkflowSnapshot
from objstore_wfp.testing._support import TTL, expect, make_snapshot

_CONTROL = "".join(map(chr, [*range(0x20), 0x7F]))

#: Ids every backend must refuse with InvalidIdentifierError, before any I/O.
ILLEGAL_IDS: list[object] = [
    "",
    "x" * 513,
    "é" * 257,  # 514 UTF-8 bytes in 257 characters
    "\x00",
    "nul\x00inside",
    "tab\tinside",
    "line\nbreak",
    "\x1f",
    "del\x7f",
    "\ud800",  # a lone surrogate cannot be encoded as UTF-8
    "lone \udfff low",
    None,
    42,
    b"bytes",
    ["list"],
]

#: Ids every backend must accept and return exactly; together they catch case folding, path
#: normalisation, percent-decoding and suffix tricks in key encodings.
LEGAL_IDS: list[str] = [
    "a/b",
    "a//b",
    "/leading",
    "trailing/",
    ".",
    "..",
    "../../etc/passwd",
    "a/./b",
    "%2F",
    "a%2Fb",
    "%",
    "%%",
    "100%",
    "with space",
    " ",
    "~",
    "~user",
    "Job",
    "job",
    "JOB",
    "😀",
    "中文标识",
    "x" * 512,
    "é" * 256,
    "😀" * 128,
    "ends.json",
    "ends.json.tmp",
    "ends.lock",
    "C1 controls are legal \x80\x9f",
    "\u00a0nbsp",
    "e\u0301",  # decomposed é: must stay distinct from the composed one
    "\u00e9",
    "back\\slash",
    "quote\"'",
    "colon:star*?<>|",
    "+plus=eq&amp#hash",
]

_PIECES = ["/", ".", "..", "%", "%2F", "%25", " ", "~", ".json", "A", "a", "\\", "😀", "é", "e\u0301"]
_LEGAL_CHARS = st.characters(exclude_categories=["Cs"], exclude_characters=_CONTROL)
legal_ids = (
    st.lists(st.sampled_from(_PIECES) | st.text(_LEGAL_CHARS, min_size=1, max_size=8), min_size=1, max_size=6)
    .map("".join)
    .filter(lambda s: len(s.encode("utf-8")) <= 512)
)

Call = Callable[[PersistentBackend, object], Awaitable[object]]


def _snapshot_with_id(bad: object) -> WorkflowSnapshot:
    return WorkflowSnapshot(bad, "def-1")  # type: ignore[arg-type]


def _snapshot_with_result(bad: object) -> WorkflowSnapshot:
    snapshot = make_snapshot("wf-2")
    snapshot.mark_task_completed(bad, b"out")  # type: ignore[arg-type]
    return snapshot


def _snapshot_at_task(bad: object) -> WorkflowSnapshot:
    return make_snapshot("wf-2", position=AtTask(bad))  # type: ignore[arg-type]


def _snapshot_at_fork(bad: object) -> WorkflowSnapshot:
    return make_snapshot("wf-2", position=AtFork("f", ["ok", bad]))  # type: ignore[list-item]


def _snapshot_at_delay(bad: object) -> WorkflowSnapshot:
    return make_snapshot("wf-2", position=AtDelay(bad, datetime(2026, 1, 1, tzinfo=timezone.utc)))  # type: ignore[arg-type]


def _snapshot_at_signal(step: object, name: object) -> WorkflowSnapshot:
    return make_snapshot("wf-2", position=AtSignal(step, name))  # type: ignore[arg-type]


# Every method, once per id argument it takes. ``b`` is the backend, ``x`` the illegal id.
ID_CALLS: dict[str, Call] = {
    "save_snapshot.instance_id": lambda b, x: b.save_snapshot(_snapshot_with_id(x)),
    "save_snapshot.completed_task_id": lambda b, x: b.save_snapshot(_snapshot_with_result(x)),
    "save_snapshot.AtTask.task_id": lambda b, x: b.save_snapshot(_snapshot_at_task(x)),
    "save_snapshot.AtFork.branch_task_ids": lambda b, x: b.save_snapshot(_snapshot_at_fork(x)),
    "load_snapshot.instance_id": lambda b, x: b.load_snapshot(x),  # type: ignore[arg-type]
    "delete_snapshot.instance_id": lambda b, x: b.delete_snapshot(x),  # type: ignore[arg-type]
    "save_task_result.instance_id": lambda b, x: b.save_task_result(x, "t1", b"o"),  # type: ignore[arg-type]
    "save_task_result.task_id": lambda b, x: b.save_task_result("wf-1", x, b"o"),  # type: ignore[arg-type]
    "load_task_result.instance_id": lambda b, x: b.load_task_result(x, "t1"),  # type: ignore[arg-type]
    "load_task_result.task_id": lambda b, x: b.load_task_result("wf-1", x),  # type: ignore[arg-type]
    "claim_task.instance_id": lambda b, x: b.claim_task(x, "t1", "w", TTL),  # type: ignore[arg-type]
    "claim_task.task_id": lambda b, x: b.claim_task("wf-1", x, "w", TTL),  # type: ignore[arg-type]
    "claim_task.worker_id": lambda b, x: b.claim_task("wf-1", "t1", x, TTL),  # type: ignore[arg-type]
    "release_task_claim.instance_id": lambda b, x: b.release_task_claim(x, "t1", "w"),  # type: ignore[arg-type]
    "release_task_claim.task_id": lambda b, x: b.release_task_claim("wf-1", x, "w"),  # type: ignore[arg-type]
    "release_task_claim.worker_id": lambda b, x: b.release_task_claim("wf-1", "t1", x),  # type: ignore[arg-type]
    "extend_task_claim.instance_id": lambda b, x: b.extend_task_claim(x, "t1", "w", TTL),  # type: ignore[arg-type]
    "extend_task_claim.task_id": lambda b, x: b.extend_task_claim("wf-1", x, "w", TTL),  # type: ignore[arg-type]
    "extend_task_claim.worker_id": lambda b, x: b.extend_task_claim("wf-1", "t1", x, TTL),  # type: ignore[arg-type]
    "find_available_tasks.worker_id": lambda b, x: b.find_available_tasks(x, 10),  # type: ignore[arg-type]
    "request_cancellation.instance_id": lambda b, x: b.request_cancellation(x, "r", "admin"),  # type: ignore[arg-type]
    "get_cancellation_request.instance_id": lambda b, x: b.get_cancellation_request(x),  # type: ignore[arg-type]
    "clear_cancellation_request.instance_id": lambda b, x: b.clear_cancellation_request(x),  # type: ignore[arg-type]
    "check_and_cancel.instance_id": lambda b, x: b.check_and_cancel(x),  # type: ignore[arg-type]
    "check_and_cancel.interrupted_at_task": lambda b, x: b.check_and_cancel("wf-1", x),  # type: ignore[arg-type]
    "save_snapshot.AtDelay.step_id": lambda b, x: b.save_snapshot(_snapshot_at_delay(x)),
    "save_snapshot.AtSignal.step_id": lambda b, x: b.save_snapshot(_snapshot_at_signal(x, "go")),
    "save_snapshot.AtSignal.signal_name": lambda b, x: b.save_snapshot(_snapshot_at_signal("s", x)),
    "send_signal.instance_id": lambda b, x: b.send_signal(x, "go", b""),  # type: ignore[arg-type]
    "send_signal.name": lambda b, x: b.send_signal("wf-1", x, b""),  # type: ignore[arg-type]
    "list_signals.instance_id": lambda b, x: b.list_signals(x),  # type: ignore[arg-type]
    "list_signals.name": lambda b, x: b.list_signals("wf-1", x),  # type: ignore[arg-type]
    "pause_instance.instance_id": lambda b, x: b.pause_instance(x, "r", "admin"),  # type: ignore[arg-type]
    "resume_instance.instance_id": lambda b, x: b.resume_instance(x),  # type: ignore[arg-type]
    "get_pause_request.instance_id": lambda b, x: b.get_pause_request(x),  # type: ignore[arg-type]
}


class IdentifierTests:
    """Identifiers: illegal ids are refused by every method, legal odd ids round-trip exactly."""

    @pytest.mark.parametrize("call", list(ID_CALLS))
    async def test_illegal_ids_are_refused(self, backend: PersistentBackend, call: str) -> None:
        await backend.save_snapshot(make_snapshot(position=AtTask("t1")))
        await backend.save_task_result("wf-1", "t0", b"out-0")
        assert await backend.claim_task("wf-1", "t1", "w", TTL) is not None
        await backend.request_cancellation("wf-1", "r", "admin")
        before = await backend.load_snapshot("wf-1")
        for bad in ILLEGAL_IDS:
            if bad is None and call in ("check_and_cancel.interrupted_at_task", "list_signals.name"):
                continue  # None means "not at a task", "every name" there
            if isinstance(bad, list) and call == "save_snapshot.completed_task_id":
                continue  # a list cannot even be a dict key
            with expect(InvalidIdentifierError, f"{call} with the illegal id {bad!r}"):
                await ID_CALLS[call](backend, bad)
        # Nothing was written or removed on the way.
        assert await backend.list_snapshots() == ["wf-1"], (
            f"{call} with illegal ids changed the snapshot list"
        )
        after = await backend.load_snapshot("wf-1")
        assert after == before and after.version == before.version, f"{call} with illegal ids changed wf-1"
        assert await backend.get_cancellation_request("wf-1") is not None
        assert await backend.claim_task("wf-1", "t1", "w2", TTL) is None, (
            f"{call} with illegal ids freed a claim"
        )

    async def test_legal_odd_instance_ids_round_trip(self, backend: PersistentBackend) -> None:
        for n, instance_id in enumerate(LEGAL_IDS):
            await backend.save_snapshot(make_snapshot(instance_id, initial_input=str(n).encode()))
        listed = await backend.list_snapshots()
        assert listed == sorted(LEGAL_IDS), (
            f"ids were lost, merged or changed: missing {sorted(set(LEGAL_IDS) - set(listed))!r}, "
            f"extra {sorted(set(listed) - set(LEGAL_IDS))!r}"
        )
        for n, instance_id in enumerate(LEGAL_IDS):
            loaded = await backend.load_snapshot(instance_id)
            assert loaded.instance_id == instance_id
            assert loaded.initial_input == str(n).encode(), (
                f"{instance_id!r} loaded another instance's snapshot"
            )
            await backend.save_task_result(instance_id, "t0", instance_id.encode())
        for instance_id in LEGAL_IDS:
            assert await backend.load_task_result(instance_id, "t0") == instance_id.encode(), instance_id
        found = await backend.find_available_tasks("w", len(LEGAL_IDS) + 5)
        assert sorted(t.instance_id for t in found) == sorted(LEGAL_IDS)
        assert {t.instance_id: t.input for t in found} == {
            i: str(n).encode() for n, i in enumerate(LEGAL_IDS)
        }
        for instance_id in LEGAL_IDS:
            claim = await backend.claim_task(instance_id, "t1", "w", TTL)
            assert claim is not None and claim.instance_id == instance_id, instance_id
        assert await backend.find_available_tasks("w", 100) == []
        for instance_id in LEGAL_IDS[::2]:
            await backend.delete_snapshot(instance_id)
        assert await backend.list_snapshots() == sorted(LEGAL_IDS[1::2]), "delete removed the wrong ids"

    async def test_legal_odd_task_and_worker_ids_round_trip(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot(position=AtFork("f", LEGAL_IDS)))
        found = await backend.find_available_tasks("w", len(LEGAL_IDS) + 5)
        assert sorted(t.task_id for t in found) == sorted(LEGAL_IDS)
        for task_id in LEGAL_IDS:
            worker_id = f"worker {task_id}"[:100]
            claim = await backend.claim_task("wf-1", task_id, worker_id, TTL)
            assert claim is not None and (claim.task_id, claim.worker_id) == (task_id, worker_id), task_id
            await backend.extend_task_claim("wf-1", task_id, worker_id, TTL)
            await backend.save_task_result("wf-1", task_id, task_id.encode(), claim=claim)
            await backend.release_task_claim("wf-1", task_id, worker_id)
        stored = await backend.load_snapshot("wf-1")
        assert stored.completed_tasks == {t: TaskResult(t, t.encode()) for t in LEGAL_IDS}
        for task_id in LEGAL_IDS:
            assert await backend.load_task_result("wf-1", task_id) == task_id.encode(), task_id
        assert await backend.find_available_tasks("w", 100) == []
        assert await backend.check_and_cancel("wf-1", interrupted_at_task="../../etc") is False

    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.differing_executors,
        ],
    )
    @given(instance_id=legal_ids, task_id=legal_ids, worker_id=legal_ids)
    async def test_random_legal_ids_round_trip(
        self, backend: PersistentBackend, instance_id: str, task_id: str, worker_id: str
    ) -> None:
        # The backend lives across examples: start each one from a clean slate.
        for leftover in await backend.list_snapshots():
            await backend.delete_snapshot(leftover)
        snapshot = make_snapshot(instance_id, position=AtTask(task_id), initial_input=instance_id.encode())
        await backend.save_snapshot(snapshot)
        assert await backend.list_snapshots() == [instance_id]
        loaded = await backend.load_snapshot(instance_id)
        assert loaded.instance_id == instance_id and loaded.position == AtTask(task_id)
        [task] = await backend.find_available_tasks(worker_id, 10)
        assert (task.instance_id, task.task_id, task.input) == (instance_id, task_id, instance_id.encode())
        claim = await backend.claim_task(instance_id, task_id, worker_id, TTL)
        assert claim is not None and (claim.instance_id, claim.task_id, claim.worker_id) == (
            instance_id,
            task_id,
            worker_id,
        )
        await backend.save_task_result(instance_id, task_id, task_id.encode(), claim=claim)
        assert await backend.load_task_result(instance_id, task_id) == task_id.encode()
        await backend.delete_snapshot(instance_id)
        assert await backend.list_snapshots() == []


class ArgumentTests:
    """Other bad arguments get ``InvalidArgumentError``; the error family is as documented."""

    async def test_error_family(self) -> None:
        for error in (
            NotFoundError,
            SerializationError,
            ConflictError,
            ClaimLostError,
            CannotCancelError,
            CannotPauseError,
            InvalidArgumentError,
            InvalidIdentifierError,
            StoreUnavailableError,
            UnsupportedStoreError,
        ):
            assert issubclass(error, BackendError), f"{error.__name__} must be a BackendError"
        assert issubclass(InvalidIdentifierError, ValueError)
        assert issubclass(InvalidIdentifierError, InvalidArgumentError)
        assert issubclass(InvalidArgumentError, ValueError)

    async def test_save_snapshot_refuses_non_snapshots(self, backend: PersistentBackend) -> None:
        with expect(InvalidArgumentError, "save_snapshot of a dict"):
            await backend.save_snapshot({"instance_id": "wf-1"})  # type: ignore[arg-type]
        assert await backend.list_snapshots() == []

    @pytest.mark.parametrize(
        "priority", [0, 6, -1, True, "3"], ids=["zero", "six", "negative", "bool", "str"]
    )
    async def test_save_snapshot_refuses_bad_priority(
        self, backend: PersistentBackend, priority: object
    ) -> None:
        snapshot = make_snapshot()
        snapshot.priority = priority  # type: ignore[assignment]
        with expect(InvalidArgumentError, f"save_snapshot with priority {priority!r}"):
            await backend.save_snapshot(snapshot)
        assert await backend.list_snapshots() == []

    @pytest.mark.parametrize(
        "field,value",
        [("initial_input", "text"), ("definition_hash", None), ("definition_hash", b"bytes")],
        ids=["str_input", "none_hash", "bytes_hash"],
    )
    async def test_save_snapshot_refuses_bad_fields(
        self, backend: PersistentBackend, field: str, value: object
    ) -> None:
        snapshot = make_snapshot()
        setattr(snapshot, field, value)
        with expect(InvalidArgumentError, f"save_snapshot with {field}={value!r}"):
            await backend.save_snapshot(snapshot)
        assert await backend.list_snapshots() == []

    async def test_save_snapshot_refuses_non_bytes_result(self, backend: PersistentBackend) -> None:
        snapshot = make_snapshot()
        snapshot.completed_tasks["t1"] = TaskResult("t1", "text")  # type: ignore[arg-type]
        with expect(InvalidArgumentError, "save_snapshot with a str task output"):
            await backend.save_snapshot(snapshot)
        assert await backend.list_snapshots() == []

    @pytest.mark.parametrize("which", ["reason", "requested_by"])
    async def test_cancellation_text_must_be_str(self, backend: PersistentBackend, which: str) -> None:
        await backend.save_snapshot(make_snapshot())
        args: dict[str, object] = {"reason": "r", "requested_by": "admin", which: None}
        with expect(InvalidArgumentError, f"request_cancellation with {which}=None"):
            await backend.request_cancellation("wf-1", **args)  # type: ignore[arg-type]
        assert await backend.get_cancellation_request("wf-1") is None

    async def test_claim_ttl_must_be_timedelta_or_none(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        with expect(InvalidArgumentError, "claim_task with ttl=timedelta(-1 day)"):
            await backend.claim_task("wf-1", "t1", "w", timedelta(days=-1))
        assert await backend.claim_task("wf-1", "t1", "w", None) is not None
