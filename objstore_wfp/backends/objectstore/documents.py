"""The stored documents of layout 2, parsed and encoded without I/O.

A snapshot object holds everything that must change atomically with the workflow's state: the
state itself, every recorded result, the ready tasks (with the slot of each one's index entry),
the fencing tokens published by takeovers, the pending cancellation request, the pause request,
the buffered signals (with the highest ``seq`` given out and the nonces of the inbox objects
absorbed last), and the incarnation. Documents written before signals and pause existed lack
those fields and read as having none. A claim object holds one task's lease and its token
high-water mark; an inbox object one signal not yet absorbed into its snapshot.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from objstore_wfp.backends import layout
from objstore_wfp.errors import ClaimLostError, InvalidIdentifierError, SerializationError
from objstore_wfp.ids import validate_id
from objstore_wfp.model import AtDelay, AtSignal, CancellationRequest, PauseRequest, Signal, TaskClaim
from objstore_wfp.model.codec import (
    JSON,
    Reader,
    b64,
    cancellation_from_json,
    cancellation_to_json,
    dumps,
    envelope,
    iso,
    loads,
    open_envelope,
    opt_iso,
    pause_from_json,
    position_from_json,
    unb64,
)
from objstore_wfp.stores.base import StoredObject

TERMINAL = frozenset({"completed", "failed", "cancelled"})

# A byte value is stored inline as base64 text, or as {"blob": key, "size": n, "digest": hex}.
Stash = str | dict[str, Any]


#: Seeded from the OS once per process (and again in a forked child, which would otherwise
#: repeat its parent's draws): a ``secrets`` call per nonce cost a system call each, several
#: per task. Private, so no ``random.seed()`` elsewhere can make two processes draw alike.
_nonces = random.Random()
os.register_at_fork(after_in_child=_nonces.seed)


def nonce() -> str:
    """16 random hex digits: written into every object, so no two writes have equal bytes (an
    S3 ETag is the MD5 of the bytes: equal bytes would let a stale compare-and-swap succeed)."""
    return f"{_nonces.getrandbits(64):016x}"


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def check_stash(value: Any, what: str, key: str) -> Stash:
    if isinstance(value, str):
        return value
    if (
        isinstance(value, dict)
        and isinstance(value.get("blob"), str)
        and isinstance(value.get("size"), int)
        and isinstance(value.get("digest"), str)
    ):
        return value
    raise SerializationError(f"{key}: {what} must be base64 text or a blob reference")


def inline(value: str, what: str) -> bytes:
    try:
        return unb64(value)
    except ValueError:
        raise SerializationError(f"{what} is not valid base64") from None


def same(value: Stash, data: bytes) -> bool:
    """Whether a stored value holds ``data`` (blobs are compared by size and digest)."""
    if isinstance(value, str):
        return inline(value, "value") == data
    return bool(value["size"] == len(data) and value["digest"] == digest(data))


@dataclass(frozen=True)
class Snapshot:
    """A parsed snapshot object: its raw JSON plus the parts the protocol reasons about."""

    key: str
    version: str
    doc: JSON
    state: str
    incarnation: str
    results: dict[str, Stash]
    ready: dict[str, str]  # task id -> slot of its fresh index entry
    fences: dict[str, int]  # task id -> lowest token a fenced write may carry
    cancel: JSON | None
    priority: int
    pause: JSON | None = None
    signals: tuple[Signal, ...] = ()  # pending, in seq order
    signal_seq: int = 0  # the highest seq given to a signal of this incarnation
    absorbed: tuple[str, ...] = ()  # nonces of the inbox objects absorbed last
    #: A tombstone: the last copy of a deleted instance (see ``ObjectStoreBackend.delete_snapshot``).
    deleted: bool = False

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def held_back(self) -> bool:
        """Whether polls must offer nothing of the instance: cancellation pending, or paused."""
        return self.cancel is not None or self.pause is not None

    def pause_request(self) -> PauseRequest | None:
        return None if self.pause is None else pause_from_json(self.pause, self.key)

    def wait(self) -> AtDelay | AtSignal | None:
        """The wait the workflow stands at while its step has no result, else ``None``."""
        if self.state != "in_progress":
            return None
        pos = position_from_json(Reader(self.doc, self.key).obj("state").obj("position"))
        if isinstance(pos, (AtDelay, AtSignal)) and pos.step_id not in self.results:
            return pos
        return None

    def pending(self, name: str) -> Signal | None:
        """The oldest buffered signal named ``name``."""
        return next((s for s in self.signals if s.name == name), None)

    def wait_due(self, wait: AtDelay | AtSignal, now: datetime) -> datetime | None:
        """When the step of ``wait`` is due with this document's signals (see :func:`wait_due`)."""
        signalled = isinstance(wait, AtSignal) and self.pending(wait.signal_name) is not None
        return wait_due(wait, signalled, now)

    def offers(self, task_id: str, now: datetime) -> bool:
        """Whether ``task_id``, ready in this document, may be offered at ``now``: a wait's step
        only once due (an early claim may have moved its entry to a lease's expiry)."""
        wait = self.wait()
        if wait is None or wait.step_id != task_id:
            return True
        due = self.wait_due(wait, now)
        return due is not None and due <= now

    def signal_fields(self, signals: tuple[Signal, ...], seq: int, absorbed: tuple[str, ...]) -> JSON:
        """The document fields that hold ``signals`` (pending), ``seq`` and ``absorbed``."""
        return {
            "signals": [signal_to_doc(s) for s in signals],
            "signal_seq": seq,
            "absorbed": list(absorbed),
        }

    @property
    def instance_id(self) -> str:
        return str(self.doc["instance_id"])

    def cancellation(self) -> CancellationRequest | None:
        return None if self.cancel is None else cancellation_from_json(self.cancel, self.key)

    def encode(self, **changes: Any) -> bytes:
        """The document with ``changes`` applied and a fresh nonce, as bytes."""
        return dumps({**self.doc, **changes, "w": nonce()})

    def fence_refuses(self, claim: TaskClaim, incarnation: str | None) -> bool:
        """Whether a write fenced by ``claim`` (taken in ``incarnation``) must be refused here:
        the claim belongs to another incarnation (``None``: taken while no snapshot existed), or
        a newer holder published its token."""
        return incarnation != self.incarnation or claim.token < self.fences.get(claim.task_id, 0)


def wait_due(wait: AtDelay | AtSignal, signalled: bool, now: datetime) -> datetime | None:
    """When the step of ``wait`` is (or was) due to be offered: a delay's wake time; a signal
    wait's ``now`` once ``signalled`` (a signal of its name is pending), else its timeout
    (``None``: not until a signal comes)."""
    if isinstance(wait, AtDelay):
        return wait.wake_at
    return now if signalled else wait.timeout_at


def lost(claim: TaskClaim) -> ClaimLostError:
    """The error of a write refused because ``claim`` is no longer the live holding."""
    return ClaimLostError(
        f"worker {claim.worker_id!r} no longer holds task {claim.task_id!r} of "
        f"{claim.instance_id!r} with token {claim.token}"
    )


def parse_snapshot(obj: StoredObject, key: str) -> Snapshot:
    doc = loads(obj.data, key)
    r = open_envelope(doc, "snapshot", key)
    try:
        validate_id(r.text("instance_id"), f"{key}: instance_id")
    except InvalidIdentifierError as exc:
        raise SerializationError(str(exc)) from None  # bad stored bytes, not a bad argument
    results = {t: check_stash(v, f"result {t!r}", key) for t, v in r.obj("results").doc.items()}
    ready = r.obj("ready").doc
    if not all(isinstance(v, str) for v in ready.values()):
        raise SerializationError(f"{key}: field 'ready' must map task ids to strings")
    fences = r.obj("fences").doc
    if not all(type(v) is int for v in fences.values()):
        raise SerializationError(f"{key}: field 'fences' must map task ids to integers")
    cancel = doc.get("cancel")
    if cancel is not None:
        cancellation_from_json(cancel, key)  # validated now: readers must not meet it broken later
    pause = doc.get("pause")
    if pause is not None:
        pause_from_json(pause, key)
    instance_id = r.text("instance_id")
    signals = tuple(
        signal_from_doc(Reader(v, key, "signals[]"), instance_id) for v in doc.get("signals") or []
    )
    seq = doc.get("signal_seq", 0)
    absorbed = doc.get("absorbed") or []
    if type(seq) is not int or not all(isinstance(n, str) for n in absorbed):
        raise SerializationError(f"{key}: fields 'signal_seq' and 'absorbed' must be an integer and strings")
    return Snapshot(
        key,
        obj.version,
        doc,
        r.obj("state").text("type"),
        r.text("incarnation"),
        results,
        ready,
        fences,
        cancel,
        r.integer("priority"),
        pause,
        signals,
        seq,
        tuple(absorbed),
        doc.get("deleted") is True,
    )


def signal_to_doc(s: Signal) -> JSON:
    """A buffered signal inside its snapshot (the instance id is the snapshot's)."""
    return {"seq": s.seq, "name": s.name, "payload": b64(s.payload), "sent_at": iso(s.sent_at)}


def signal_from_doc(r: Reader, instance_id: str) -> Signal:
    return Signal(instance_id, r.text("name"), r.blob("payload"), r.integer("seq"), r.timestamp("sent_at"))


@dataclass(frozen=True)
class InboxSignal:
    """An inbox object: one signal as sent, for the incarnation its sender saw, not yet absorbed
    into the snapshot. ``nonce`` tells it apart from a later object at the same key."""

    signal: Signal
    incarnation: str
    nonce: str

    def to_bytes(self) -> bytes:
        s = self.signal
        return dumps(
            envelope(
                "signal",
                {
                    "instance_id": s.instance_id,
                    "incarnation": self.incarnation,
                    **signal_to_doc(s),
                    "w": self.nonce,
                },
            )
        )


def parse_inbox(obj: StoredObject, key: str) -> InboxSignal:
    r = open_envelope(loads(obj.data, key), "signal", key)
    return InboxSignal(signal_from_doc(r, r.text("instance_id")), r.text("incarnation"), r.text("w"))


def cancel_to_json(request: CancellationRequest) -> JSON:
    return cancellation_to_json(request)


@dataclass(frozen=True)
class Stamp:
    """A reading of a monotonic clock: ``at`` seconds in ``domain`` (see :mod:`objstore_wfp.clock`)."""

    domain: str
    at: float


@dataclass(frozen=True)
class ClaimRecord:
    """One task's lease. ``incarnation`` is the snapshot's when the claim was taken (``None``
    when no snapshot existed): a claim of another incarnation is dead for this one.

    The lease runs ``ttl`` seconds from when its writer sent it (``stamp``, on the writer's
    monotonic clock), or from when the store wrote it, by the store's clock: never by a wall
    clock (see :mod:`objstore_wfp.backends.objectstore.leases`). ``claimed_at`` and
    ``expires_at`` are the writer's wall clock, kept for people reading the object."""

    instance_id: str
    task_id: str
    incarnation: str | None
    holder: str | None
    token: int
    claimed_at: datetime
    expires_at: datetime | None
    #: The key of the leased index entry this holding placed, so whoever replaces or releases
    #: the claim removes it (``None``: the task was not ready when claimed).
    entry: str | None = None
    #: Seconds the lease lasts (``None``: never expires).
    ttl: float | None = None
    #: The writer's monotonic clock just before it sent this version (``None`` in claims
    #: written before leases were timed so).
    stamp: Stamp | None = None

    def released(self) -> ClaimRecord:
        return replace(self, holder=None, entry=None)

    def to_bytes(self) -> bytes:
        stamp = None if self.stamp is None else {"domain": self.stamp.domain, "at": self.stamp.at}
        return dumps(
            envelope(
                "claim",
                {
                    "instance_id": self.instance_id,
                    "task_id": self.task_id,
                    "incarnation": self.incarnation,
                    "worker_id": self.holder,
                    "claimed_at": iso(self.claimed_at),
                    "expires_at": opt_iso(self.expires_at),
                    "ttl": self.ttl,
                    "stamp": stamp,
                    "token": self.token,
                    "entry": self.entry,
                    "w": nonce(),
                },
            )
        )

    def public(self) -> TaskClaim:
        assert self.holder is not None
        return TaskClaim(
            self.instance_id, self.task_id, self.holder, self.claimed_at, self.expires_at, self.token
        )


def parse_claim(obj: StoredObject, key: str) -> ClaimRecord:
    r = open_envelope(loads(obj.data, key), "claim", key)
    instance_id, task_id = r.text("instance_id"), r.text("task_id")
    try:
        placed = layout.claim_key(layout.encode_id(instance_id), layout.encode_id(task_id))
    except ValueError:  # an illegal id (InvalidIdentifierError is a ValueError)
        placed = None
    if placed != key:
        # A copied or misplaced object: believing it would report or fence another task.
        raise SerializationError(f"{key}: holds the claim of task {task_id!r} of {instance_id!r}")
    claimed_at = r.timestamp("claimed_at")
    expires_at = r.opt_timestamp("expires_at")
    if "ttl" in r.doc:
        ttl = r.opt_number("ttl")
        stamp_doc = r.raw("stamp")
        stamp = None
        if stamp_doc is not None:
            s = r.obj("stamp")
            stamp = Stamp(s.text("domain"), s.number("at"))
    else:  # written before leases were timed by monotonic clocks: its length is all it tells
        ttl = None if expires_at is None else (expires_at - claimed_at).total_seconds()
        stamp = None
    return ClaimRecord(
        instance_id,
        task_id,
        r.opt_text("incarnation"),
        r.opt_text("worker_id"),
        r.integer("token"),
        claimed_at,
        expires_at,
        r.opt_text("entry"),
        ttl,
        stamp,
    )


def marker() -> bytes:
    return dumps({"format": "objstore-wfp", "layout": layout.LAYOUT_VERSION})


def marker_layout(obj: StoredObject, key: str) -> object:
    doc = loads(obj.data, key)
    return doc.get("layout") if doc.get("format") == "objstore-wfp" else None
