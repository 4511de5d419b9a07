"""Stable JSON encoding of the data model.

Every object carries ``"format": 1`` and a ``"kind"``; bytes are base64 strings; datetimes are
ISO 8601 with an explicit UTC offset. Decoding is strict: an unknown format, a missing field, a
wrong type or truncated bytes raise :class:`SerializationError` naming the object and the field.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import orjson

from objstore_wfp.errors import SerializationError
from objstore_wfp.model.positions import (
    AtDelay,
    AtFork,
    AtJoin,
    AtSignal,
    AtTask,
    ExecutionPosition,
    NotStarted,
)
from objstore_wfp.model.records import CancellationRequest, PauseRequest, TaskClaim, TaskResult
from objstore_wfp.model.snapshot import WorkflowSnapshot
from objstore_wfp.model.states import Cancelled, Completed, Failed, InProgress, WorkflowState

FORMAT_VERSION = 1
JSON = dict[str, Any]


# -- raw JSON --------------------------------------------------------------------------------------
def dumps(doc: Mapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(doc)
    except TypeError as exc:
        raise SerializationError(f"cannot encode object: {exc}") from exc


def loads(data: bytes, name: str) -> JSON:
    """Parse one stored object; ``name`` (a key or id) goes into every error message."""
    if not data:
        raise SerializationError(f"{name}: empty object")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if not _is_utf8(data):
            # orjson's own words for this ("str is not valid UTF-8: surrogates not allowed")
            # describe its internals, not the object.
            raise SerializationError(
                f"{name}: not valid JSON: {len(data)} bytes that are not UTF-8 text "
                "(damaged, or written by another program)"
            ) from None
        raise SerializationError(f"{name}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise SerializationError(f"{name}: expected a JSON object, got {type(doc).__name__}")
    return doc


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class Reader:
    """Typed, path-aware access to a decoded JSON object."""

    def __init__(self, doc: Any, name: str, path: str = "") -> None:
        if not isinstance(doc, dict):
            raise SerializationError(f"{name}: {path or 'object'} must be a JSON object")
        self.doc: JSON = doc
        self.name = name
        self.path = path

    def _fail(self, key: str, msg: str) -> SerializationError:
        where = f"{self.path}.{key}" if self.path else key
        return SerializationError(f"{self.name}: field {where!r} {msg}")

    def raw(self, key: str) -> Any:
        if key not in self.doc:
            raise self._fail(key, "is missing")
        return self.doc[key]

    def _typed(self, key: str, kind: type | tuple[type, ...], label: str, optional: bool) -> Any:
        # Optional fields are nullable, not omittable: every writer of this format writes them,
        # so a missing one means a foreign or damaged object.
        value = self.raw(key)
        if value is None and optional:
            return None
        if isinstance(value, bool) and kind is not bool:
            raise self._fail(key, f"must be {label}, got a boolean")
        if not isinstance(value, kind):
            raise self._fail(key, f"must be {label}, got {type(value).__name__}")
        return value

    def text(self, key: str) -> str:
        return self._typed(key, str, "a string", False)  # type: ignore[no-any-return]

    def opt_text(self, key: str) -> str | None:
        return self._typed(key, str, "a string", True)  # type: ignore[no-any-return]

    def integer(self, key: str) -> int:
        return self._typed(key, int, "an integer", False)  # type: ignore[no-any-return]

    def number(self, key: str) -> float:
        return float(self._typed(key, (int, float), "a number", False))

    def opt_number(self, key: str) -> float | None:
        value = self._typed(key, (int, float), "a number", True)
        return None if value is None else float(value)

    def texts(self, key: str) -> list[str]:
        value = self._typed(key, list, "a list", False)
        if not all(isinstance(v, str) for v in value):
            raise self._fail(key, "must hold only strings")
        return value  # type: ignore[no-any-return]

    def obj(self, key: str) -> Reader:
        return Reader(self.raw(key), self.name, f"{self.path}.{key}" if self.path else key)

    def blob(self, key: str) -> bytes:
        return self._decoded(key, self.text(key))

    def opt_blob(self, key: str) -> bytes | None:
        value = self.opt_text(key)
        return None if value is None else self._decoded(key, value)

    def _decoded(self, key: str, value: str) -> bytes:
        try:
            return unb64(value)
        except ValueError:
            raise self._fail(key, "is not valid base64") from None

    def timestamp(self, key: str) -> datetime:
        return self._parse_dt(key, self.text(key))

    def opt_timestamp(self, key: str) -> datetime | None:
        value = self.opt_text(key)
        return None if value is None else self._parse_dt(key, value)

    def _parse_dt(self, key: str, value: str) -> datetime:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise self._fail(key, f"is not an ISO 8601 datetime: {value!r}") from None
        if parsed.tzinfo is None:
            raise self._fail(key, "has no UTC offset")
        return parsed.astimezone(timezone.utc)


def unb64(value: str) -> bytes:
    """Strict base64 decoding; raises ``ValueError`` (``binascii.Error`` is one) on bad input."""
    return base64.b64decode(value, validate=True)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def opt_b64(data: bytes | None) -> str | None:
    return None if data is None else b64(data)


def iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat()


def opt_iso(value: datetime | None) -> str | None:
    return None if value is None else iso(value)


def envelope(kind: str, body: Mapping[str, Any]) -> JSON:
    return {"format": FORMAT_VERSION, "kind": kind, **body}


def open_envelope(doc: JSON, kind: str, name: str) -> Reader:
    """Check the format version and kind of a stored object."""
    reader = Reader(doc, name)
    fmt = reader.raw("format")
    # ``True == 1`` and ``1.0 == 1`` in Python; only the JSON integer 1 is this format.
    if type(fmt) is not int or fmt != FORMAT_VERSION:
        raise SerializationError(
            f"{name}: unknown format version {fmt!r} (this release reads {FORMAT_VERSION})"
        )
    found = reader.text("kind")
    if found != kind:
        raise SerializationError(f"{name}: expected a {kind!r} object, found {found!r}")
    return reader


# -- positions ---------------------------------------------------------------------------------
def position_to_json(pos: ExecutionPosition) -> JSON:
    if isinstance(pos, NotStarted):
        return {"type": "not_started"}
    if isinstance(pos, AtTask):
        return {"type": "at_task", "task_id": pos.task_id}
    if isinstance(pos, AtFork):
        return {
            "type": "at_fork",
            "fork_id": pos.fork_id,
            "branch_task_ids": list(pos.branch_task_ids),
            "completed_branches": list(pos.completed_branches),
        }
    if isinstance(pos, AtJoin):
        return {"type": "at_join", "join_id": pos.join_id, "completed_branches": list(pos.completed_branches)}
    if isinstance(pos, AtDelay):
        return {"type": "at_delay", "step_id": pos.step_id, "wake_at": iso(pos.wake_at)}
    if isinstance(pos, AtSignal):
        return {
            "type": "at_signal",
            "step_id": pos.step_id,
            "signal_name": pos.signal_name,
            "timeout_at": opt_iso(pos.timeout_at),
        }
    raise SerializationError(f"unknown position {pos!r}")


def position_from_json(r: Reader) -> ExecutionPosition:
    kind = r.text("type")
    if kind == "not_started":
        return NotStarted()
    if kind == "at_task":
        return AtTask(r.text("task_id"))
    if kind == "at_fork":
        return AtFork(r.text("fork_id"), r.texts("branch_task_ids"), r.texts("completed_branches"))
    if kind == "at_join":
        return AtJoin(r.text("join_id"), r.texts("completed_branches"))
    if kind == "at_delay":
        return AtDelay(r.text("step_id"), r.timestamp("wake_at"))
    if kind == "at_signal":
        return AtSignal(r.text("step_id"), r.text("signal_name"), r.opt_timestamp("timeout_at"))
    raise r._fail("type", f"names an unknown position {kind!r}")


# -- states ------------------------------------------------------------------------------------
def results_to_json(results: Mapping[str, TaskResult]) -> JSON:
    return {tid: b64(res.output) for tid, res in results.items()}


def results_from_json(r: Reader) -> dict[str, TaskResult]:
    return {tid: TaskResult(tid, r.blob(tid)) for tid in r.doc}


def state_to_json(state: WorkflowState) -> JSON:
    """Encode a state. Results are left to the caller (backends store them beside the state)."""
    if isinstance(state, InProgress):
        return {
            "type": "in_progress",
            "position": position_to_json(state.position),
            "last_completed_task_id": state.last_completed_task_id,
        }
    if isinstance(state, Completed):
        return {"type": "completed", "final_output": b64(state.final_output)}
    if isinstance(state, Failed):
        return {"type": "failed", "error": state.error}
    if isinstance(state, Cancelled):
        return {
            "type": "cancelled",
            "reason": state.reason,
            "cancelled_by": state.cancelled_by,
            "cancelled_at": iso(state.cancelled_at),
            "interrupted_at_task": state.interrupted_at_task,
        }
    raise SerializationError(f"unknown state {state!r}")


def state_from_json(r: Reader, results: dict[str, TaskResult]) -> WorkflowState:
    kind = r.text("type")
    if kind == "in_progress":
        return InProgress(
            position_from_json(r.obj("position")), results, r.opt_text("last_completed_task_id")
        )
    if kind == "completed":
        return Completed(r.blob("final_output"))
    if kind == "failed":
        return Failed(r.text("error"))
    if kind == "cancelled":
        return Cancelled(
            r.text("reason"),
            r.text("cancelled_by"),
            r.timestamp("cancelled_at"),
            results,
            r.opt_text("interrupted_at_task"),
        )
    raise r._fail("type", f"names an unknown state {kind!r}")


# -- snapshots ---------------------------------------------------------------------------------
def snapshot_to_json(s: WorkflowSnapshot) -> JSON:
    """Encode a snapshot with the results its state holds (``version`` is not stored)."""
    return envelope(
        "snapshot",
        {
            "instance_id": s.instance_id,
            "definition_hash": s.definition_hash,
            "priority": s.priority,
            "created_at": iso(s.created_at),
            "updated_at": iso(s.updated_at),
            "initial_input": opt_b64(s.initial_input),
            "state": state_to_json(s.state),
            "results": results_to_json(s.completed_tasks),
        },
    )


def snapshot_from_json(doc: JSON, name: str, version: str | None = None) -> WorkflowSnapshot:
    r = open_envelope(doc, "snapshot", name)
    return snapshot_from_reader(r, results_from_json(r.obj("results")), version)


def snapshot_from_reader(r: Reader, results: dict[str, TaskResult], version: str | None) -> WorkflowSnapshot:
    """Build a snapshot from a snapshot envelope whose results the caller already decoded."""
    priority = r.integer("priority")
    try:
        return WorkflowSnapshot(
            r.text("instance_id"),
            r.text("definition_hash"),
            initial_input=r.opt_blob("initial_input"),
            priority=priority,
            state=state_from_json(r.obj("state"), results),
            created_at=r.timestamp("created_at"),
            updated_at=r.timestamp("updated_at"),
            version=version,
        )
    except ValueError as exc:
        raise SerializationError(f"{r.name}: {exc}") from None


# -- claims and cancellation requests ----------------------------------------------------------
def claim_to_json(c: TaskClaim) -> JSON:
    return envelope(
        "claim",
        {
            "instance_id": c.instance_id,
            "task_id": c.task_id,
            "worker_id": c.worker_id,
            "claimed_at": iso(c.claimed_at),
            "expires_at": opt_iso(c.expires_at),
            "token": c.token,
        },
    )


def claim_from_json(doc: JSON, name: str) -> TaskClaim:
    r = open_envelope(doc, "claim", name)
    return TaskClaim(
        r.text("instance_id"),
        r.text("task_id"),
        r.text("worker_id"),
        r.timestamp("claimed_at"),
        r.opt_timestamp("expires_at"),
        r.integer("token"),
    )


def cancellation_to_json(c: CancellationRequest) -> JSON:
    return envelope(
        "cancellation",
        {
            "instance_id": c.instance_id,
            "reason": c.reason,
            "requested_by": c.requested_by,
            "requested_at": iso(c.requested_at),
        },
    )


def cancellation_from_json(doc: JSON, name: str) -> CancellationRequest:
    r = open_envelope(doc, "cancellation", name)
    return CancellationRequest(
        r.text("instance_id"), r.text("reason"), r.text("requested_by"), r.timestamp("requested_at")
    )


def pause_to_json(p: PauseRequest) -> JSON:
    return envelope(
        "pause",
        {"reason": p.reason, "requested_by": p.requested_by, "requested_at": iso(p.requested_at)},
    )


def pause_from_json(doc: JSON, name: str) -> PauseRequest:
    r = open_envelope(doc, "pause", name)
    return PauseRequest(r.text("reason"), r.text("requested_by"), r.timestamp("requested_at"))
