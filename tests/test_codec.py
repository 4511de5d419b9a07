"""The stable JSON encoding: round trips, and strict decoding that names object and field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from objstore_wfp import (
    AtDelay,
    AtFork,
    AtJoin,
    AtSignal,
    AtTask,
    CancellationRequest,
    Cancelled,
    Completed,
    Failed,
    InProgress,
    NotStarted,
    PauseRequest,
    SerializationError,
    TaskClaim,
    TaskResult,
    WorkflowSnapshot,
)
from objstore_wfp.model.codec import (
    FORMAT_VERSION,
    cancellation_from_json,
    cancellation_to_json,
    claim_from_json,
    claim_to_json,
    dumps,
    loads,
    pause_from_json,
    pause_to_json,
    position_to_json,
    snapshot_from_json,
    snapshot_to_json,
)

NAME = "snapshots/wf-1.json"
T0 = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)


def _snapshot() -> WorkflowSnapshot:
    s = WorkflowSnapshot("wf-1", "def-1", initial_input=b"\x00in\xff", priority=2, created_at=T0)
    s.state = InProgress(
        AtFork("f", ["a", "b"], ["a"]), {"a": TaskResult("a", b"out-a"), "e": TaskResult("e", b"")}, "a"
    )
    return s


def _through_bytes(doc: dict[str, Any]) -> dict[str, Any]:
    return loads(dumps(doc), NAME)


# -- round trips ----------------------------------------------------------------------------------
def test_snapshot_round_trip_through_bytes() -> None:
    original = _snapshot()
    decoded = snapshot_from_json(_through_bytes(snapshot_to_json(original)), NAME, version="v7")
    assert decoded == original
    assert decoded.version == "v7"


def test_snapshot_json_is_stable() -> None:
    """The stored form is a public format: pin it so a change is a deliberate one."""
    s = WorkflowSnapshot("wf-1", "def-1", initial_input=b"hi", created_at=T0)
    s.state = InProgress(AtTask("t1"), {"t0": TaskResult("t0", b"\x00")}, "t0")
    assert snapshot_to_json(s) == {
        "format": 1,
        "kind": "snapshot",
        "instance_id": "wf-1",
        "definition_hash": "def-1",
        "priority": 3,
        "created_at": "2026-05-06T07:08:09.123456+00:00",
        "updated_at": "2026-05-06T07:08:09.123456+00:00",
        "initial_input": "aGk=",
        "state": {
            "type": "in_progress",
            "position": {"type": "at_task", "task_id": "t1"},
            "last_completed_task_id": "t0",
        },
        "results": {"t0": "AA=="},
    }


@pytest.mark.parametrize(
    "state",
    [
        InProgress(),
        InProgress(AtJoin("j", ["a"])),
        Completed(bytes(range(256))),
        Failed("boom \u2603"),
        Cancelled("r", "by", T0, {"a": TaskResult("a", b"x")}, "b"),
        Cancelled("r", "by", T0),
        InProgress(AtDelay("nap", T0)),
        InProgress(AtSignal("wait", "approve ✅", T0)),
        InProgress(AtSignal("wait", "approve")),
    ],
    ids=[
        "not_started",
        "at_join",
        "completed",
        "failed",
        "cancelled",
        "cancelled_bare",
        "at_delay",
        "at_signal",
        "at_signal_forever",
    ],
)
def test_state_round_trip(state: Any) -> None:
    s = WorkflowSnapshot("wf-1", "def-1", created_at=T0, state=state)
    assert snapshot_from_json(_through_bytes(snapshot_to_json(s)), NAME) == s


def test_wait_positions_are_stable() -> None:
    assert position_to_json(AtDelay("nap", T0)) == {
        "type": "at_delay",
        "step_id": "nap",
        "wake_at": "2026-05-06T07:08:09.123456+00:00",
    }
    assert position_to_json(AtSignal("s", "go", None)) == {
        "type": "at_signal",
        "step_id": "s",
        "signal_name": "go",
        "timeout_at": None,
    }
    with pytest.raises(ValueError, match="wake_at"):
        AtDelay("nap", datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timeout_at"):
        AtSignal("s", "go", datetime(2026, 1, 1))


def test_non_utc_offsets_are_normalised() -> None:
    plus_two = timezone(timedelta(hours=2))
    s = WorkflowSnapshot("wf-1", "def-1", created_at=T0.astimezone(plus_two))
    decoded = snapshot_from_json(_through_bytes(snapshot_to_json(s)), NAME)
    assert decoded.created_at == T0 and decoded.created_at.utcoffset() == timedelta(0)


def test_claim_and_cancellation_round_trip() -> None:
    for claim in (
        TaskClaim("i/1", "t", "w", T0, T0 + timedelta(seconds=30), 7),
        TaskClaim("i", "t", "w", T0, None, 1),
    ):
        assert claim_from_json(_through_bytes(claim_to_json(claim)), "claim") == claim
    request = CancellationRequest("i", "why", "who", T0)
    assert cancellation_from_json(_through_bytes(cancellation_to_json(request)), "c") == request
    pause = PauseRequest("why ✋", "who", T0)
    assert pause_from_json(_through_bytes(pause_to_json(pause)), "p") == pause


# -- strict decoding ------------------------------------------------------------------------------
Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for part in parents:
            doc = doc[part]
        doc[last] = value

    return mutate


def _drop(path: str) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for part in parents:
            doc = doc[part]
        del doc[last]

    return mutate


# (mutation of a valid snapshot document, text the error message must contain)
BAD_SNAPSHOTS: dict[str, tuple[Mutation, str]] = {
    "format_2": (_set("format", 2), "unknown format version 2"),
    "format_missing": (_drop("format"), "'format'"),
    "format_true": (_set("format", True), "format version True"),
    "format_float": (_set("format", 1.0), "format version 1.0"),
    "format_str": (_set("format", "1"), "format version '1'"),
    "kind_claim": (_set("kind", "claim"), "expected a 'snapshot' object, found 'claim'"),
    "kind_missing": (_drop("kind"), "'kind' is missing"),
    "instance_id_int": (_set("instance_id", 5), "'instance_id' must be a string, got int"),
    "instance_id_missing": (_drop("instance_id"), "'instance_id' is missing"),
    "hash_null": (_set("definition_hash", None), "'definition_hash' must be a string"),
    "priority_str": (_set("priority", "3"), "'priority' must be an integer, got str"),
    "priority_bool": (_set("priority", True), "'priority' must be an integer, got a boolean"),
    "priority_float": (_set("priority", 3.0), "'priority' must be an integer, got float"),
    "priority_range": (_set("priority", 9), "priority must be 1..5"),
    "created_missing": (_drop("created_at"), "'created_at' is missing"),
    "created_naive": (_set("created_at", "2026-01-01T00:00:00"), "'created_at' has no UTC offset"),
    "created_garbage": (_set("created_at", "yesterday"), "'created_at' is not an ISO 8601"),
    "created_number": (_set("created_at", 1700000000), "'created_at' must be a string, got int"),
    "updated_naive": (_set("updated_at", "2026-01-01T00:00:00.5"), "'updated_at' has no UTC offset"),
    "input_missing": (_drop("initial_input"), "'initial_input' is missing"),
    "input_bad_b64": (_set("initial_input", "!!!"), "'initial_input' is not valid base64"),
    "input_b64_padding": (_set("initial_input", "AAA"), "'initial_input' is not valid base64"),
    "input_non_ascii": (_set("initial_input", "é"), "'initial_input' is not valid base64"),
    "input_list": (_set("initial_input", [1]), "'initial_input' must be a string, got list"),
    "state_missing": (_drop("state"), "'state' is missing"),
    "state_list": (_set("state", []), "state must be a JSON object"),
    "state_type": (_set("state.type", "paused"), "'state.type' names an unknown state 'paused'"),
    "last_missing": (_drop("state.last_completed_task_id"), "'state.last_completed_task_id' is missing"),
    "position_type": (
        _set("state.position.type", "at_loop"),
        "'state.position.type' names an unknown position",
    ),
    "branches_not_str": (
        _set("state.position.branch_task_ids", ["a", 1]),
        "'state.position.branch_task_ids' must hold only strings",
    ),
    "branches_str": (
        _set("state.position.branch_task_ids", "ab"),
        "'state.position.branch_task_ids' must be a list",
    ),
    "fork_id_missing": (_drop("state.position.fork_id"), "'state.position.fork_id' is missing"),
    "results_missing": (_drop("results"), "'results' is missing"),
    "results_list": (_set("results", ["a"]), "results must be a JSON object"),
    "result_bad_b64": (_set("results.a", "%%%"), "'results.a' is not valid base64"),
    "result_null": (_set("results.a", None), "'results.a' must be a string"),
}


@pytest.mark.parametrize("case", list(BAD_SNAPSHOTS))
def test_bad_snapshot_documents(case: str) -> None:
    mutate, expected = BAD_SNAPSHOTS[case]
    doc = copy.deepcopy(snapshot_to_json(_snapshot()))
    mutate(doc)
    with pytest.raises(SerializationError) as info:
        snapshot_from_json(_through_bytes(doc), NAME)
    message = str(info.value)
    assert message.startswith(NAME + ":"), f"the message must name the object first: {message!r}"
    assert expected in message, f"{message!r} does not mention {expected!r}"


@pytest.mark.parametrize(
    "data,expected",
    [
        (b"", "empty object"),
        (b'{"format": 1, "kind": "snap', "not valid JSON"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b"null", "expected a JSON object, got NoneType"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b'{"a": NaN}', "not valid JSON"),
    ],
    ids=["empty", "truncated", "array", "null", "not_utf8", "nan"],
)
def test_unreadable_bytes(data: bytes, expected: str) -> None:
    with pytest.raises(SerializationError, match=f"^{NAME}: .*{expected}"):
        loads(data, NAME)


def test_every_truncation_of_a_snapshot_is_refused() -> None:
    data = dumps(snapshot_to_json(_snapshot()))
    for cut in range(len(data)):
        with pytest.raises(SerializationError, match=NAME):
            snapshot_from_json(loads(data[:cut], NAME), NAME)


def test_bad_claims_and_cancellations() -> None:
    claim = claim_to_json(TaskClaim("i", "t", "w", T0, None, 1))
    for field, value, expected in [
        ("token", "1", "'token' must be an integer"),
        ("expires_at", "2026-01-01T00:00:00", "'expires_at' has no UTC offset"),
        ("claimed_at", None, "'claimed_at' must be a string"),
        ("worker_id", 3, "'worker_id' must be a string"),
    ]:
        doc = dict(claim, **{field: value})
        with pytest.raises(SerializationError, match=expected):
            claim_from_json(doc, "claims/i/t.json")
    with pytest.raises(SerializationError, match="'expires_at' is missing"):
        claim_from_json({k: v for k, v in claim.items() if k != "expires_at"}, "claims/i/t.json")
    with pytest.raises(SerializationError, match="expected a 'claim' object, found 'snapshot'"):
        claim_from_json(snapshot_to_json(_snapshot()), "claims/i/t.json")
    request = cancellation_to_json(CancellationRequest("i", "why", "who", T0))
    with pytest.raises(SerializationError, match="'requested_at' has no UTC offset"):
        cancellation_from_json(dict(request, requested_at="2026-01-01T10:00:00"), "c")
    with pytest.raises(SerializationError, match="'reason' is missing"):
        cancellation_from_json({k: v for k, v in request.items() if k != "reason"}, "c")


def test_encoding_refuses_foreign_values() -> None:
    with pytest.raises(SerializationError):
        dumps({"x": object()})
    assert orjson.loads(dumps({"x": "é"})) == {"x": "é"}
    assert FORMAT_VERSION == 1


# -- property: any snapshot survives the trip ------------------------------------------------------
ids = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12)
blobs = st.binary(max_size=64)
times = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(timezone.utc)
)
results = st.dictionaries(ids, blobs, max_size=4).map(lambda d: {k: TaskResult(k, v) for k, v in d.items()})
positions = st.one_of(
    st.just(NotStarted()),
    st.builds(AtTask, ids),
    st.builds(AtFork, ids, st.lists(ids, max_size=4), st.lists(ids, max_size=2)),
    st.builds(AtJoin, ids, st.lists(ids, max_size=3)),
    st.builds(AtDelay, ids, times),
    st.builds(AtSignal, ids, ids, st.none() | times),
)
states = st.one_of(
    st.builds(InProgress, positions, results, st.none() | ids),
    st.builds(Completed, blobs),
    st.builds(Failed, st.text(max_size=30)),
    st.builds(Cancelled, st.text(max_size=10), st.text(max_size=10), times, results, st.none() | ids),
)
snapshots = st.builds(
    WorkflowSnapshot,
    ids,
    st.text(max_size=20),
    initial_input=st.none() | blobs,
    priority=st.integers(1, 5),
    state=states,
    created_at=times,
    updated_at=times,
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(snapshots)
def test_any_snapshot_round_trips(snapshot: WorkflowSnapshot) -> None:
    decoded = snapshot_from_json(_through_bytes(snapshot_to_json(snapshot)), NAME)
    assert decoded == snapshot
