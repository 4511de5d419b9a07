"""The key layout and stored objects of the LangGraph saver: a public, versioned format.

All keys are relative to the store's root::

    langgraph/heads/<T>/<N>.json                    head of one (thread, namespace): the latest
                                                    checkpoint inline, or a tombstone
    langgraph/log/<T>/<N>/c/<inv>.json              one immutable checkpoint (create-if-absent)
    langgraph/log/<T>/<N>/w/<inv>/<K>.<idx>.json    one pending write of task K (create-if-absent)

``<T>`` and ``<N>`` are digests of the thread id and the namespace (both are arbitrary strings;
every object stores them in full). ``<inv>`` is the checkpoint id inverted: LangGraph checkpoint
ids are UUIDs ordered by time, and ``<inv>`` is ``2**128 - 1 - int(id)`` as 32 hex digits, so
an ascending LIST returns the newest checkpoint first. ``<K>`` is a digest of the task id and
``<idx>`` the write's index (negative for LangGraph's special channels).

Every object carries ``"format": 1`` and a ``"kind"``; serialized values are LangGraph ``serde``
output, ``{"type": ..., "data": <base64>}``.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from objstore_wfp.errors import InvalidArgumentError, SerializationError
from objstore_wfp.model.codec import JSON, Reader, b64, dumps, envelope, iso, loads, open_envelope

ROOT = "langgraph/"
HEADS = ROOT + "heads/"
LOG = ROOT + "log/"

HEAD_KIND = "langgraph-head"
CHECKPOINT_KIND = "langgraph-checkpoint"
WRITE_KIND = "langgraph-write"

LIVE = "live"
DELETED = "deleted"

_MAX_ID = (1 << 128) - 1


def _digest(value: str) -> str:
    return hashlib.blake2b(value.encode("utf-8"), digest_size=16).hexdigest()


def checkpoint_number(checkpoint_id: str) -> int:
    """The checkpoint id as a 128-bit number (the order LangGraph sorts ids in).

    Raises :class:`InvalidArgumentError` unless the id is a canonical lowercase UUID string,
    which is what LangGraph generates (``uuid6``).

    >>> checkpoint_number("00000000-0000-0000-0000-00000000000a")
    10
    """
    try:
        parsed = uuid.UUID(checkpoint_id)
    except (ValueError, TypeError, AttributeError):
        raise InvalidArgumentError(f"checkpoint id must be a UUID string, got {checkpoint_id!r}") from None
    if str(parsed) != checkpoint_id:
        raise InvalidArgumentError(f"checkpoint id must be a canonical lowercase UUID, got {checkpoint_id!r}")
    return parsed.int


@dataclass(frozen=True)
class Slot:
    """Where one (thread, namespace) lives in the store."""

    thread_id: str
    checkpoint_ns: str

    @property
    def thread_dir(self) -> str:
        return _digest(self.thread_id)

    @property
    def head_key(self) -> str:
        return f"{HEADS}{self.thread_dir}/{_digest(self.checkpoint_ns)}.json"

    @property
    def log_prefix(self) -> str:
        return f"{LOG}{self.thread_dir}/{_digest(self.checkpoint_ns)}/"

    @property
    def checkpoints_prefix(self) -> str:
        return self.log_prefix + "c/"

    def checkpoint_key_at(self, number: int) -> str:
        """The key of the checkpoint whose id is ``number``; ``number`` may be one past an id,
        to start a LIST just before or after that id's key."""
        return f"{self.checkpoints_prefix}{_MAX_ID - number:032x}.json"

    def checkpoint_key(self, checkpoint_id: str) -> str:
        return self.checkpoint_key_at(checkpoint_number(checkpoint_id))

    def writes_prefix(self, checkpoint_id: str) -> str:
        return f"{self.log_prefix}w/{_MAX_ID - checkpoint_number(checkpoint_id):032x}/"

    def write_key(self, checkpoint_id: str, task_id: str, idx: int) -> str:
        return f"{self.writes_prefix(checkpoint_id)}{_digest(task_id)}.{idx}.json"


def thread_heads_prefix(thread_id: str) -> str:
    return f"{HEADS}{_digest(thread_id)}/"


def log_key_number(slot: Slot, key: str) -> int | None:
    """The checkpoint id (as a number) a log key of ``slot`` belongs to, or ``None`` if the key
    is not one this layout writes."""
    rest = key[len(slot.log_prefix) :] if key.startswith(slot.log_prefix) else ""
    kind, _, tail = rest.partition("/")
    if kind not in ("c", "w") or len(tail) < 32:
        return None
    try:
        return _MAX_ID - int(tail[:32], 16)
    except ValueError:
        return None


# -- serialized values -----------------------------------------------------------------------------
def typed_to_json(typed: tuple[str, bytes]) -> JSON:
    return {"type": typed[0], "data": b64(typed[1])}


def typed_from_json(reader: Reader, key: str) -> tuple[str, bytes]:
    value = reader.obj(key)
    return value.text("type"), value.blob("data")


# -- checkpoints -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckpointRecord:
    """One stored checkpoint: LangGraph's checkpoint and metadata, each as ``serde`` output."""

    slot: Slot
    checkpoint_id: str
    parent_id: str | None
    checkpoint: tuple[str, bytes]
    metadata: tuple[str, bytes]
    #: Fresh for every put, so that a retried put can tell its own object from an earlier one's.
    nonce: str = ""

    def to_json(self) -> JSON:
        return envelope(
            CHECKPOINT_KIND,
            {
                "thread_id": self.slot.thread_id,
                "checkpoint_ns": self.slot.checkpoint_ns,
                "checkpoint_id": self.checkpoint_id,
                "parent_checkpoint_id": self.parent_id,
                "checkpoint": typed_to_json(self.checkpoint),
                "metadata": typed_to_json(self.metadata),
                "nonce": self.nonce,
            },
        )

    def encode(self) -> bytes:
        return dumps(self.to_json())

    @classmethod
    def from_json(cls, doc: JSON, name: str) -> CheckpointRecord:
        r = open_envelope(doc, CHECKPOINT_KIND, name)
        return cls(
            Slot(r.text("thread_id"), r.text("checkpoint_ns")),
            r.text("checkpoint_id"),
            r.opt_text("parent_checkpoint_id"),
            typed_from_json(r, "checkpoint"),
            typed_from_json(r, "metadata"),
            r.text("nonce"),
        )

    @classmethod
    def decode(cls, data: bytes, name: str) -> CheckpointRecord:
        return cls.from_json(loads(data, name), name)


# -- heads -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Head:
    """The head of one (thread, namespace), with the store version it was read or written at.

    A live head carries its latest checkpoint inline (``latest``); a tombstone (``state ==
    "deleted"``) carries ``None`` and, in ``checkpoint_id``, the last checkpoint id the deleted
    thread had: everything up to it is being removed.
    """

    slot: Slot
    state: str
    checkpoint_id: str
    latest: CheckpointRecord | None
    updated_at: datetime
    nonce: str
    version: str = ""

    @property
    def live(self) -> bool:
        return self.state == LIVE

    @property
    def latest_parent(self) -> str | None:
        return None if self.latest is None else self.latest.parent_id

    def encode(self) -> bytes:
        return dumps(
            envelope(
                HEAD_KIND,
                {
                    "thread_id": self.slot.thread_id,
                    "checkpoint_ns": self.slot.checkpoint_ns,
                    "state": self.state,
                    "checkpoint_id": self.checkpoint_id,
                    "latest": None if self.latest is None else self.latest.to_json(),
                    "updated_at": iso(self.updated_at),
                    # S3 versions are content digests: a fresh nonce keeps two equal heads apart.
                    "nonce": self.nonce,
                },
            )
        )

    @classmethod
    def decode(cls, data: bytes, version: str, name: str) -> Head:
        r = open_envelope(loads(data, name), HEAD_KIND, name)
        state = r.text("state")
        if state not in (LIVE, DELETED):
            raise SerializationError(f"{name}: field 'state' must be {LIVE!r} or {DELETED!r}, got {state!r}")
        raw_latest = r.raw("latest")
        latest = None if raw_latest is None else CheckpointRecord.from_json(raw_latest, f"{name} (latest)")
        if (latest is None) != (state == DELETED):
            raise SerializationError(f"{name}: field 'latest' must be present exactly when the head is live")
        return cls(
            Slot(r.text("thread_id"), r.text("checkpoint_ns")),
            state,
            r.text("checkpoint_id"),
            latest,
            r.timestamp("updated_at"),
            r.text("nonce"),
            version,
        )


# -- pending writes --------------------------------------------------------------------------------
@dataclass(frozen=True)
class WriteRecord:
    """One pending write of one task, attached to one checkpoint."""

    task_id: str
    task_path: str
    idx: int
    channel: str
    value: tuple[str, bytes]

    def encode(self, slot: Slot, checkpoint_id: str) -> bytes:
        return dumps(
            envelope(
                WRITE_KIND,
                {
                    "thread_id": slot.thread_id,
                    "checkpoint_ns": slot.checkpoint_ns,
                    "checkpoint_id": checkpoint_id,
                    "task_id": self.task_id,
                    "task_path": self.task_path,
                    "idx": self.idx,
                    "channel": self.channel,
                    "value": typed_to_json(self.value),
                },
            )
        )

    @classmethod
    def decode(cls, data: bytes, name: str) -> WriteRecord:
        r = open_envelope(loads(data, name), WRITE_KIND, name)
        return cls(
            r.text("task_id"),
            r.text("task_path"),
            r.integer("idx"),
            r.text("channel"),
            typed_from_json(r, "value"),
        )


def retarget(data: bytes, name: str, thread_id: str) -> bytes:
    """A stored checkpoint or write, moved to another thread (for ``copy_thread``)."""
    doc: dict[str, Any] = loads(data, name)
    if doc.get("kind") not in (CHECKPOINT_KIND, WRITE_KIND):
        open_envelope(doc, CHECKPOINT_KIND, name)  # raises, naming what was found
    doc["thread_id"] = thread_id
    return dumps(doc)
