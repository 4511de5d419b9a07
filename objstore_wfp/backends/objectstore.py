"""``ObjectStoreBackend``: the contract over any :class:`ConditionalStore`.

Every rule about claims, leases, fencing, compare-and-swap and the ready index is written here,
once; a store adapter only translates get / put / put-if-absent / put-if-version / delete / list.
The key layout is in :mod:`objstore_wfp.backends.layout` and ``docs/object-store.md``.

How the guarantees are met:

- **Mutual exclusion.** A claim is one object, ``claims/<I>/<T>.json``. The first claim of a task is
  a create-if-absent (one request); later ones (after release or expiry) replace the previous
  object by compare-and-swap on the version just read, so of N racing claimers exactly one write
  succeeds. The object is never deleted while the instance lives: it carries the fencing token.
- **No lost update.** The snapshot object holds the state and every recorded result. Every change
  to it (save, result, cancellation) is a compare-and-swap; result writes retry on contention
  and never overwrite a recorded result (first wins). A result written with a claim re-reads the
  claim on every attempt and refuses unless that claim (worker and token) is still live.
- **Crash safety.** Objects are written whole (the stores publish atomically). Ready-index
  entries are created *before* the snapshot that references them and removed *after* the
  snapshot that dropped them, so a crash leaves at worst an unreferenced entry, which readers
  skip and :meth:`ObjectStoreBackend.repair` (or ``find_available_tasks`` after a grace period)
  deletes; never a dispatchable task without an entry.
- **ABA.** Every object carries a fresh nonce (``"w"``), so its bytes, and thus its version, are
  new on every write even where versions are content hashes (S3 ETags).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from objstore_wfp.backends import layout
from objstore_wfp.backends.validation import (
    check_claim_for,
    check_duration,
    check_ids,
    check_limit,
    check_optional_task_id,
    check_output,
    check_snapshot,
    check_text,
    expiry,
)
from objstore_wfp.clock import Clock, SystemClock
from objstore_wfp.contract import PersistentBackend
from objstore_wfp.errors import (
    CannotCancelError,
    ClaimLostError,
    ConflictError,
    InvalidIdentifierError,
    NotFoundError,
    SerializationError,
    StoreUnavailableError,
    UnsupportedStoreError,
)
from objstore_wfp.ids import validate_id
from objstore_wfp.model import (
    AvailableTask,
    CancellationRequest,
    Cancelled,
    Completed,
    TaskClaim,
    TaskResult,
    WorkflowSnapshot,
)
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
    snapshot_from_reader,
    state_to_json,
    unb64,
)
from objstore_wfp.stores.base import ConditionalStore, StoredObject

log = logging.getLogger(__name__)

#: Outputs and inputs larger than this live in their own ``blobs/`` objects.
INLINE_LIMIT = 256 * 1024
#: How long an unreferenced ready entry or blob may be part of a write still in flight.
STALE_GRACE = timedelta(minutes=10)
#: Compare-and-swap attempts before contention is reported as ``StoreUnavailableError``.
MAX_ATTEMPTS = 64
_TERMINAL = frozenset({"completed", "failed", "cancelled"})
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _nonce() -> str:
    return secrets.token_hex(8)


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _us(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


async def _backoff(attempt: int) -> None:
    # Full jitter: contending writers spread out instead of colliding again in lockstep.
    await asyncio.sleep(random.uniform(0, min(0.25, 0.002 * 2**attempt)))


# -- stored documents ------------------------------------------------------------------------------
# A byte value is stored inline as base64, or as {"blob": key, "size": n, "digest": hex} when large.
Stash = str | dict[str, Any]


@dataclass
class _Snapshot:
    """A parsed snapshot object: its raw JSON plus the parts the backend reasons about."""

    key: str
    version: str
    doc: JSON
    state: str
    results: dict[str, Stash]
    ready: dict[str, str]  # task id -> ready slot
    priority: int

    @property
    def terminal(self) -> bool:
        return self.state in _TERMINAL

    @property
    def instance_id(self) -> str:
        return str(self.doc["instance_id"])


def _check_stash(value: Any, what: str, key: str) -> Stash:
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


def _inline(value: str, what: str) -> bytes:
    """An inline (base64) byte value."""
    try:
        return unb64(value)
    except ValueError:
        raise SerializationError(f"{what} is not valid base64") from None


def _parse_snapshot(obj: StoredObject, key: str) -> _Snapshot:
    doc = loads(obj.data, key)
    r = open_envelope(doc, "snapshot", key)
    try:
        validate_id(r.text("instance_id"), f"{key}: instance_id")
    except InvalidIdentifierError as exc:
        raise SerializationError(str(exc)) from None  # bad stored bytes, not a bad argument
    results = {t: _check_stash(v, f"result {t!r}", key) for t, v in r.obj("results").doc.items()}
    ready = r.obj("ready").doc
    if not all(isinstance(v, str) for v in ready.values()):
        raise SerializationError(f"{key}: field 'ready' must map task ids to strings")
    state = r.obj("state")
    return _Snapshot(key, obj.version, doc, state.text("type"), results, ready, r.integer("priority"))


@dataclass
class _ClaimRecord:
    instance_id: str
    task_id: str
    holder: str | None
    token: int
    claimed_at: datetime
    expires_at: datetime | None

    def live(self, now: datetime) -> bool:
        return self.holder is not None and (self.expires_at is None or now < self.expires_at)

    def to_bytes(self) -> bytes:
        return dumps(
            envelope(
                "claim",
                {
                    "instance_id": self.instance_id,
                    "task_id": self.task_id,
                    "worker_id": self.holder,
                    "claimed_at": iso(self.claimed_at),
                    "expires_at": opt_iso(self.expires_at),
                    "token": self.token,
                    "w": _nonce(),
                },
            )
        )

    def public(self) -> TaskClaim:
        assert self.holder is not None
        return TaskClaim(
            self.instance_id, self.task_id, self.holder, self.claimed_at, self.expires_at, self.token
        )


def _parse_claim(obj: StoredObject, key: str) -> _ClaimRecord:
    r = open_envelope(loads(obj.data, key), "claim", key)
    return _ClaimRecord(
        r.text("instance_id"),
        r.text("task_id"),
        r.opt_text("worker_id"),
        r.integer("token"),
        r.timestamp("claimed_at"),
        r.opt_timestamp("expires_at"),
    )


@dataclass
class RepairReport:
    """What :meth:`ObjectStoreBackend.repair` found and mended."""

    instances: int = 0
    entries_created: int = 0
    entries_deleted: int = 0
    orphans_deleted: int = 0
    debris_deleted: int = 0
    unreadable: list[str] = field(default_factory=list)


class ObjectStoreBackend(PersistentBackend):
    """The contract over a conditional object store: local disk, ``memory://``, S3, GCS, Azure.

    >>> import asyncio
    >>> from datetime import timedelta
    >>> from objstore_wfp import AtTask, WorkflowSnapshot
    >>> async def main():
    ...     async with ObjectStoreBackend.from_url("memory://doctest-backend") as backend:
    ...         snap = WorkflowSnapshot("order/1", "flow-v1", initial_input=b"in")
    ...         snap.update_position(AtTask("charge"))
    ...         await backend.save_snapshot(snap)
    ...         claim = await backend.claim_task("order/1", "charge", "w1", timedelta(seconds=30))
    ...         rival = await backend.claim_task("order/1", "charge", "w2", timedelta(seconds=30))
    ...         await backend.save_task_result("order/1", "charge", b"paid", claim=claim)
    ...         return claim.token, rival, await backend.list_snapshots()
    >>> asyncio.run(main())
    (1, None, ['order/1'])
    """

    def __init__(
        self,
        store: ConditionalStore,
        *,
        clock: Clock | None = None,
        inline_limit: int = INLINE_LIMIT,
        verify_conditional_writes: bool = True,
    ) -> None:
        """``verify_conditional_writes=False`` skips the store probe: only for stores you know
        enforce conditional writes, since claims are only as exclusive as the store makes them."""
        if isinstance(inline_limit, bool) or not isinstance(inline_limit, int) or inline_limit < 0:
            raise ValueError(f"inline_limit must be an int >= 0, got {inline_limit!r}")
        self.store = store
        self._clock = clock or SystemClock()
        self._inline_limit = inline_limit
        self._verified = not verify_conditional_writes

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        clock: Clock | None = None,
        inline_limit: int = INLINE_LIMIT,
        verify_conditional_writes: bool = True,
        **storage_options: Any,
    ) -> ObjectStoreBackend:
        """Open the store a URL names (see :func:`objstore_wfp.stores.urls.open_store`); storage
        options go to fsspec unchanged. The store is probed once, before the first operation."""
        from objstore_wfp.stores.urls import open_store

        return cls(
            open_store(url, **storage_options),
            clock=clock,
            inline_limit=inline_limit,
            verify_conditional_writes=verify_conditional_writes,
        )

    async def verify_store(self) -> None:
        """Probe the store now (otherwise the first operation does); raises
        ``UnsupportedStoreError`` for a store that ignores preconditions."""
        from objstore_wfp.stores.probe import probe_store

        await probe_store(self.store)
        self._verified = True

    async def _ready(self) -> None:
        if not self._verified:
            await self.verify_store()

    async def close(self) -> None:
        await self.store.close()

    # -- byte values -----------------------------------------------------------------------
    async def _stash(self, instance: str, data: bytes) -> Stash:
        if len(data) <= self._inline_limit:
            return b64(data)
        key = layout.blob_key(instance, f"{_ms(self._clock.now()):013d}.{_nonce()}")
        await self.store.put_if_absent(key, data)
        return {"blob": key, "size": len(data), "digest": _digest(data)}

    async def _unstash(self, value: Stash, what: str) -> bytes:
        if isinstance(value, str):
            return _inline(value, what)
        found = await self.store.get(value["blob"])
        if found is None:
            raise SerializationError(f"{what}: blob {value['blob']!r} is missing")
        if len(found.data) != value["size"] or _digest(found.data) != value["digest"]:
            raise SerializationError(f"{what}: blob {value['blob']!r} does not match its digest")
        return found.data

    async def _drop_blob(self, value: Stash | None) -> None:
        if isinstance(value, dict):
            await self.store.delete(value["blob"])

    def _kept(self, old: _Snapshot | None, initial_input: bytes) -> Stash | None:
        """The stored initial input when it is unchanged, so re-saves upload no new blob."""
        if old is None or old.doc.get("initial_input") is None:
            return None
        try:
            value = _check_stash(old.doc["initial_input"], "initial_input", old.key)
        except SerializationError:
            return None
        return value if self._same(value, initial_input) else None

    @staticmethod
    def _same(value: Stash, data: bytes) -> bool:
        if isinstance(value, str):
            return value == b64(data)
        return bool(value["size"] == len(data) and value["digest"] == _digest(data))

    # -- reading -----------------------------------------------------------------------------
    async def _read(self, instance: str) -> _Snapshot | None:
        key = layout.snapshot_key(instance)
        found = await self.store.get(key)
        if found is None:
            return None
        stored = _parse_snapshot(found, key)
        if layout.encode_id(stored.instance_id) != instance:
            # A copied or misplaced object: answering with it would act on another instance.
            raise SerializationError(f"{key}: holds the snapshot of instance {stored.instance_id!r}")
        return stored

    async def _read_existing(self, instance_id: str) -> _Snapshot:
        stored = await self._read(layout.encode_id(instance_id))
        if stored is None:
            raise NotFoundError(f"no snapshot for instance {instance_id!r}")
        return stored

    async def _materialize(self, stored: _Snapshot) -> WorkflowSnapshot:
        key = stored.key
        doc = dict(stored.doc)
        # Inline values stay as they are (base64, decoded once below); only blob references
        # cost I/O, and only they get a task each: a task per inline result was 40% of a load.
        if doc.get("initial_input") is not None:
            initial = _check_stash(doc["initial_input"], "initial_input", key)
            if not isinstance(initial, str):
                doc["initial_input"] = b64(await self._unstash(initial, f"{key} initial_input"))
        state = dict(Reader(doc, key).obj("state").doc)
        if stored.state == "completed":
            final = _check_stash(state.get("final_output"), "state.final_output", key)
            if not isinstance(final, str):
                state["final_output"] = b64(await self._unstash(final, f"{key} final_output"))
        doc["state"] = state
        blobs = {t: v for t, v in stored.results.items() if not isinstance(v, str)}
        fetched = await asyncio.gather(*(self._unstash(v, f"{key} result {t!r}") for t, v in blobs.items()))
        outputs = dict(zip(blobs, fetched, strict=True))
        results = {
            t: TaskResult(t, _inline(v, f"{key} result {t!r}") if isinstance(v, str) else outputs[t])
            for t, v in stored.results.items()
        }
        return snapshot_from_reader(Reader(doc, key), results, stored.version)

    # -- snapshots -------------------------------------------------------------------------
    async def save_snapshot(self, snapshot: WorkflowSnapshot) -> str:
        check_snapshot(snapshot)
        state_doc = state_to_json(snapshot.state)
        await self._ready()
        instance = layout.encode_id(snapshot.instance_id)
        key = layout.snapshot_key(instance)
        offered = {t: r.output for t, r in snapshot.completed_tasks.items()}
        stashed: dict[str, Stash] = {}
        initial: Stash | None = None
        if isinstance(snapshot.state, Completed):
            state_doc["final_output"] = await self._stash(instance, snapshot.state.final_output)

        for attempt in range(MAX_ATTEMPTS):
            current = await self.store.get(key)
            old: _Snapshot | None = None
            if current is not None:
                try:
                    old = _parse_snapshot(current, key)
                except SerializationError:
                    if snapshot.version is not None:
                        raise
                    log.warning("overwriting unreadable snapshot %s", key)
            if old is not None and old.terminal:
                raise ConflictError(f"instance {snapshot.instance_id!r} is {old.state}; its state is final")
            if snapshot.version is not None and (current is None or current.version != snapshot.version):
                raise ConflictError(
                    f"instance {snapshot.instance_id!r} moved since version {snapshot.version!r}"
                )
            if snapshot.initial_input is not None and initial is None:
                initial = self._kept(old, snapshot.initial_input) or await self._stash(
                    instance, snapshot.initial_input
                )
            results = dict(old.results) if old else {}
            for task_id, output in offered.items():
                if task_id in results:
                    if not self._same(results[task_id], output):
                        raise ConflictError(
                            f"task {task_id!r} of {snapshot.instance_id!r} already has another output"
                        )
                    continue
                if task_id not in stashed:
                    stashed[task_id] = await self._stash(instance, output)
                results[task_id] = stashed[task_id]

            now_us = _us(self._clock.now())
            ready: dict[str, str] = {}
            for task_id in snapshot.available_task_ids():
                if task_id in results:
                    continue
                kept = old.ready.get(task_id) if old and old.priority == snapshot.priority else None
                ready[task_id] = kept or layout.ready_slot(snapshot.priority, now_us, _nonce())
            created = [
                layout.ready_key(slot, instance, layout.encode_id(t))
                for t, slot in ready.items()
                if not (old and old.ready.get(t) == slot)
            ]
            await asyncio.gather(*(self.store.put(k, _ENTRY) for k in created))

            doc = envelope(
                "snapshot",
                {
                    "instance_id": snapshot.instance_id,
                    "definition_hash": snapshot.definition_hash,
                    "priority": snapshot.priority,
                    "created_at": iso(snapshot.created_at),
                    "updated_at": iso(snapshot.updated_at),
                    "initial_input": initial,
                    "state": state_doc,
                    "results": results,
                    "ready": ready,
                    "w": _nonce(),
                },
            )
            data = dumps(doc)
            if current is None:
                version = await self.store.put_if_absent(key, data)
            else:
                version = await self.store.put_if_version(key, data, current.version)
            if version is None:
                await self._delete_quietly(created)
                if snapshot.version is not None:
                    raise ConflictError(f"instance {snapshot.instance_id!r} moved during the save")
                await _backoff(attempt)
                continue
            if old is not None:
                await self._delete_quietly(
                    layout.ready_key(slot, instance, layout.encode_id(t))
                    for t, slot in old.ready.items()
                    if ready.get(t) != slot
                )
            snapshot.version = version
            return version
        raise StoreUnavailableError(f"instance {snapshot.instance_id!r}: too much write contention")

    async def _delete_quietly(self, keys: Any) -> None:
        """Best-effort cleanup: what survives is unreferenced and removed by ``repair``."""
        keys = list(keys)
        outcomes = await asyncio.gather(*(self.store.delete(k) for k in keys), return_exceptions=True)
        for key, outcome in zip(keys, outcomes, strict=True):
            if isinstance(outcome, Exception):
                log.warning("could not delete %s: %s", key, outcome)

    async def load_snapshot(self, instance_id: str) -> WorkflowSnapshot:
        check_ids(instance_id)
        await self._ready()
        return await self._materialize(await self._read_existing(instance_id))

    async def delete_snapshot(self, instance_id: str) -> None:
        check_ids(instance_id)
        await self._ready()
        instance = layout.encode_id(instance_id)
        key = layout.snapshot_key(instance)
        while True:
            current = await self.store.get(key)
            if current is None:
                raise NotFoundError(f"no snapshot for instance {instance_id!r}")
            try:
                entries = _parse_snapshot(current, key).ready.items()
            except SerializationError:
                entries = {}.items()  # unreadable: repair() removes what it referenced
            if self.store.supports_conditional_delete:
                try:
                    if await self.store.delete_if_version(key, current.version):
                        break
                    continue  # it changed under us: drop the newer state's entries instead
                except UnsupportedStoreError:
                    pass  # an unprobed store just told the adapter it cannot delete conditionally
            await self.store.delete(key)
            break
        # Entries go only after the snapshot: a crash in between leaves unreferenced entries
        # (skipped, then removed by repair), never a live snapshot whose entries are gone.
        await self._delete_quietly(
            layout.ready_key(slot, instance, layout.encode_id(t)) for t, slot in entries
        )
        owned = [o.key async for o in self.store.list(f"{layout.CLAIMS}{instance}/")]
        owned += [o.key async for o in self.store.list(f"{layout.BLOBS}{instance}/")]
        owned.append(layout.cancel_key(instance))
        await self._delete_quietly(owned)

    async def list_snapshots(self) -> list[str]:
        await self._ready()
        ids: list[str] = []
        async for obj in self.store.list(layout.SNAPSHOTS):
            instance = layout.instance_from_snapshot_key(obj.key)
            if instance is None:
                continue
            try:
                decoded = layout.decode_id(instance)
            except ValueError:
                continue  # a foreign object: not ours to list
            if decoded is None:
                stored = await self._read_quietly(instance)
                if stored is None:
                    continue
                decoded = stored.instance_id
            ids.append(decoded)
        return sorted(ids)

    async def _read_quietly(self, instance: str) -> _Snapshot | None:
        try:
            return await self._read(instance)
        except SerializationError as exc:
            log.warning("skipping unreadable snapshot: %s", exc)
            return None

    # -- task results ----------------------------------------------------------------------
    async def save_task_result(
        self, instance_id: str, task_id: str, output: bytes, *, claim: TaskClaim | None = None
    ) -> None:
        check_ids(instance_id, task_id)
        data = check_output(output)
        check_claim_for(claim, instance_id, task_id)
        await self._ready()
        instance = layout.encode_id(instance_id)
        stash: Stash | None = None
        for attempt in range(MAX_ATTEMPTS):
            if claim is not None:
                await self._check_holding(claim)
            stored = await self._read_existing(instance_id)
            recorded = stored.results.get(task_id)
            if recorded is not None:
                await self._drop_blob(stash)
                if self._same(recorded, data):
                    return
                raise ConflictError(f"task {task_id!r} of {instance_id!r} already has another output")
            if stored.terminal:
                await self._drop_blob(stash)
                raise ConflictError(f"instance {instance_id!r} is {stored.state}; its state is final")
            if stash is None:
                stash = await self._stash(instance, data)
            ready = {t: s for t, s in stored.ready.items() if t != task_id}
            doc = {**stored.doc, "results": {**stored.results, task_id: stash}, "ready": ready, "w": _nonce()}
            if await self.store.put_if_version(stored.key, dumps(doc), stored.version) is not None:
                if task_id in stored.ready:
                    key = layout.ready_key(stored.ready[task_id], instance, layout.encode_id(task_id))
                    await self._delete_quietly([key])
                return
            await _backoff(attempt)
        await self._drop_blob(stash)
        raise StoreUnavailableError(f"instance {instance_id!r}: too much write contention")

    async def load_task_result(self, instance_id: str, task_id: str) -> bytes | None:
        check_ids(instance_id, task_id)
        await self._ready()
        stored = await self._read_existing(instance_id)
        value = stored.results.get(task_id)
        return None if value is None else await self._unstash(value, f"{stored.key} result {task_id!r}")

    # -- claims ----------------------------------------------------------------------------
    def _claim_key(self, instance_id: str, task_id: str) -> str:
        return layout.claim_key(layout.encode_id(instance_id), layout.encode_id(task_id))

    async def _read_claim(self, key: str) -> tuple[StoredObject, _ClaimRecord] | None:
        found = await self.store.get(key)
        return None if found is None else (found, _parse_claim(found, key))

    async def _check_holding(self, claim: TaskClaim) -> None:
        found = await self._read_claim(self._claim_key(claim.instance_id, claim.task_id))
        record = found[1] if found else None
        if (
            record is None
            or record.holder != claim.worker_id
            or record.token != claim.token
            or not record.live(self._clock.now())
        ):
            raise ClaimLostError(
                f"worker {claim.worker_id!r} no longer holds task {claim.task_id!r} of "
                f"{claim.instance_id!r} with token {claim.token}"
            )

    async def claim_task(
        self, instance_id: str, task_id: str, worker_id: str, ttl: timedelta | None
    ) -> TaskClaim | None:
        check_ids(instance_id, task_id, worker_id)
        check_duration(ttl, "ttl", optional=True)
        await self._ready()
        key = self._claim_key(instance_id, task_id)

        def fresh(token: int) -> _ClaimRecord:
            now = self._clock.now()
            expires = None if ttl is None else expiry(now, ttl)
            return _ClaimRecord(instance_id, task_id, worker_id, token, now, expires)

        record = fresh(1)
        if await self.store.put_if_absent(key, record.to_bytes()) is not None:
            return record.public()
        for _ in range(MAX_ATTEMPTS):
            found = await self._read_claim(key)
            if found is None:
                record = fresh(1)
                if await self.store.put_if_absent(key, record.to_bytes()) is not None:
                    return record.public()
                continue
            current, old = found
            if old.live(self._clock.now()):
                return None
            record = fresh(old.token + 1)
            if await self.store.put_if_version(key, record.to_bytes(), current.version) is not None:
                return record.public()
            # Lost the race: the next read sees the winner's live claim.
        raise StoreUnavailableError(f"task {task_id!r} of {instance_id!r}: too much claim contention")

    async def _update_holding(
        self, instance_id: str, task_id: str, worker_id: str, change: Mapping[str, Any]
    ) -> _ClaimRecord:
        """Rewrite the caller's own claim by CAS (release or renewal)."""
        key = self._claim_key(instance_id, task_id)
        for attempt in range(MAX_ATTEMPTS):
            found = await self._read_claim(key)
            if found is None or found[1].holder is None:
                raise NotFoundError(f"no claim on task {task_id!r} of {instance_id!r}")
            current, record = found
            if record.holder != worker_id:
                raise ClaimLostError(f"task {task_id!r} of {instance_id!r} is held by another worker")
            for name, value in change.items():
                setattr(record, name, value(record) if callable(value) else value)
            if await self.store.put_if_version(key, record.to_bytes(), current.version) is not None:
                return record
            await _backoff(attempt)
        raise StoreUnavailableError(f"task {task_id!r} of {instance_id!r}: too much claim contention")

    async def release_task_claim(self, instance_id: str, task_id: str, worker_id: str) -> None:
        check_ids(instance_id, task_id, worker_id)
        await self._ready()
        await self._update_holding(instance_id, task_id, worker_id, {"holder": None})

    async def extend_task_claim(
        self, instance_id: str, task_id: str, worker_id: str, additional_duration: timedelta
    ) -> TaskClaim:
        check_ids(instance_id, task_id, worker_id)
        check_duration(additional_duration, "additional_duration")
        await self._ready()

        def renewed(record: _ClaimRecord) -> datetime | None:
            return None if record.expires_at is None else expiry(self._clock.now(), additional_duration)

        record = await self._update_holding(instance_id, task_id, worker_id, {"expires_at": renewed})
        return record.public()

    async def list_claims(self, instance_id: str | None = None) -> list[TaskClaim]:
        """Every claim that has a holder (live or expired, not released), of one instance or all,
        sorted by instance and task. Unreadable claim objects are skipped with a warning."""
        prefix = layout.CLAIMS
        if instance_id is not None:
            check_ids(instance_id)
            prefix += layout.encode_id(instance_id) + "/"
        await self._ready()
        claims = []
        async for obj in self.store.list(prefix):
            try:
                found = await self._read_claim(obj.key)
            except SerializationError as exc:
                log.warning("skipping unreadable claim: %s", exc)
                continue
            if found is not None and found[1].holder is not None:
                claims.append(found[1].public())
        return sorted(claims, key=lambda c: (c.instance_id, c.task_id))

    # -- finding work ----------------------------------------------------------------------
    async def find_available_tasks(self, worker_id: str, limit: int) -> list[AvailableTask]:
        validate_id(worker_id, "worker_id")
        check_limit(limit)
        if limit == 0:
            return []
        await self._ready()
        cancelling = set()
        async for obj in self.store.list(layout.CANCELS):
            if obj.key.endswith(layout.JSON_SUFFIX):
                cancelling.add(obj.key[len(layout.CANCELS) : -len(layout.JSON_SUFFIX)])
        snapshots: dict[str, _Snapshot | None] = {}
        found: list[tuple[tuple[int, int, str, str], AvailableTask]] = []
        now = self._clock.now()
        listing = aiter(self.store.list(layout.READY))
        exhausted = False
        while not exhausted:
            # Read the candidates still needed concurrently: one round trip per batch, not per task.
            batch: list[tuple[str, layout.ReadyEntry]] = []
            wanted = max(limit - len(found), 1)
            while len(batch) < wanted:
                try:
                    obj = await anext(listing)
                except StopAsyncIteration:
                    exhausted = True
                    break
                entry = layout.parse_ready_key(obj.key)
                if entry is None or entry.instance in cancelling:
                    continue
                # The listing orders by priority and ready time; tasks that tie there are ordered
                # by instance and task id below, so read on until the tie at the limit is complete.
                if len(found) >= limit and (entry.priority, entry.ready_us) != found[-1][0][:2]:
                    exhausted = True
                    break
                batch.append((obj.key, entry))
            for entry, task in await self._available(batch, snapshots, now):
                found.append(((entry.priority, entry.ready_us, task.instance_id, task.task_id), task))
        found.sort(key=lambda item: item[0])
        return [task for _, task in found[:limit]]

    async def _available(
        self,
        batch: list[tuple[str, layout.ReadyEntry]],
        snapshots: dict[str, _Snapshot | None],
        now: datetime,
    ) -> list[tuple[layout.ReadyEntry, AvailableTask]]:
        """The entries of ``batch`` that stand for claimable tasks, in order. Claims are read
        first (a running task then costs one GET; the entry holds the encoded ids the claim key
        needs), then the snapshots of the instances not read yet, each once."""

        async def claimable(entry: layout.ReadyEntry) -> bool:
            try:
                found = await self._read_claim(layout.claim_key(entry.instance, entry.task))
            except SerializationError as exc:
                log.warning("skipping task with unreadable claim: %s", exc)
                return False
            return found is None or not found[1].live(now)

        verdicts = await asyncio.gather(*(claimable(entry) for _, entry in batch))
        free = [item for item, ok in zip(batch, verdicts, strict=True) if ok]
        unread = list(dict.fromkeys(e.instance for _, e in free if e.instance not in snapshots))
        snapshots.update(
            zip(unread, await asyncio.gather(*(self._read_quietly(i) for i in unread)), strict=True)
        )
        available = []
        for key, entry in free:
            stored = snapshots[entry.instance]
            task_id = self._referenced_task(stored, entry)
            if stored is None or task_id is None:
                if _us(now) - entry.ready_us > STALE_GRACE / timedelta(microseconds=1):
                    await self._delete_quietly([key])
                continue
            try:
                task_input = await self._task_input(stored)
            except SerializationError as exc:
                log.warning("skipping task with unreadable input: %s", exc)
                continue
            definition = str(stored.doc["definition_hash"])
            task = AvailableTask(stored.instance_id, task_id, task_input, definition, stored.priority)
            available.append((entry, task))
        return available

    @staticmethod
    def _referenced_task(stored: _Snapshot | None, entry: layout.ReadyEntry) -> str | None:
        """The task a ready entry stands for, if the snapshot still references this very entry."""
        if stored is None or stored.terminal:
            return None
        for task_id, slot in stored.ready.items():
            if slot == entry.slot and layout.encode_id(task_id) == entry.task:
                return task_id
        return None

    async def _task_input(self, stored: _Snapshot) -> bytes | None:
        state = Reader(stored.doc, stored.key).obj("state")
        last = state.opt_text("last_completed_task_id")
        if last is not None and last in stored.results:
            return await self._unstash(stored.results[last], f"{stored.key} result {last!r}")
        initial = stored.doc.get("initial_input")
        if initial is None:
            return None
        return await self._unstash(_check_stash(initial, "initial_input", stored.key), stored.key)

    # -- cancellation ----------------------------------------------------------------------
    async def request_cancellation(self, instance_id: str, reason: str, requested_by: str) -> None:
        check_ids(instance_id)
        check_text(reason, "reason")
        check_text(requested_by, "requested_by")
        await self._ready()
        stored = await self._read_existing(instance_id)
        if stored.state == "cancelled":
            return
        if stored.terminal:
            raise CannotCancelError(f"instance {instance_id!r} is {stored.state}")
        request = CancellationRequest(instance_id, reason, requested_by, self._clock.now())
        doc = {**cancellation_to_json(request), "w": _nonce()}
        await self.store.put(layout.cancel_key(layout.encode_id(instance_id)), dumps(doc))

    async def get_cancellation_request(self, instance_id: str) -> CancellationRequest | None:
        check_ids(instance_id)
        await self._ready()
        key = layout.cancel_key(layout.encode_id(instance_id))
        found = await self.store.get(key)
        return None if found is None else cancellation_from_json(loads(found.data, key), key)

    async def clear_cancellation_request(self, instance_id: str) -> None:
        check_ids(instance_id)
        await self._ready()
        await self.store.delete(layout.cancel_key(layout.encode_id(instance_id)))

    async def check_and_cancel(self, instance_id: str, interrupted_at_task: str | None = None) -> bool:
        check_ids(instance_id)
        check_optional_task_id(interrupted_at_task, "interrupted_at_task")
        await self._ready()
        instance = layout.encode_id(instance_id)
        for attempt in range(MAX_ATTEMPTS):
            stored = await self._read_existing(instance_id)
            request = await self.get_cancellation_request(instance_id)
            if request is None:
                return False
            if stored.state != "in_progress":
                await self.clear_cancellation_request(instance_id)
                return False
            snapshot = await self._materialize(stored)
            snapshot.state = Cancelled(
                request.reason,
                request.requested_by,
                self._clock.now(),
                snapshot.completed_tasks,
                interrupted_at_task,
            )
            doc = {**stored.doc, "state": state_to_json(snapshot.state), "ready": {}, "w": _nonce()}
            if await self.store.put_if_version(stored.key, dumps(doc), stored.version) is not None:
                await self._delete_quietly(
                    [layout.ready_key(s, instance, layout.encode_id(t)) for t, s in stored.ready.items()]
                    + [layout.cancel_key(instance)]
                )
                return True
            await _backoff(attempt)
        raise StoreUnavailableError(f"instance {instance_id!r}: too much write contention")

    # -- maintenance -----------------------------------------------------------------------
    async def repair(self, *, grace: timedelta = STALE_GRACE) -> RepairReport:
        """Mend what crashes between two writes can leave behind; safe to run at any time.

        Re-creates ready entries that a snapshot references but that are missing; deletes ready
        entries no snapshot references and blobs no snapshot references, once older than
        ``grace`` (younger ones may belong to a write in flight); deletes claims and cancellation
        requests of instances that no longer exist, also once older than ``grace`` (younger ones
        may belong to an instance created while repair ran) and never a live claim; and discards
        the store's debris of interrupted writes (temporary files on local disk) older than
        ``grace``. Reads every snapshot: O(instances) requests. Unreadable snapshots are listed,
        never touched.
        """
        await self._ready()
        report = RepairReport()
        cutoff_ms = _ms(self._clock.now() - grace)
        cutoff_us = _us(self._clock.now() - grace)
        entries = {o.key async for o in self.store.list(layout.READY)}
        referenced: set[str] = set()
        blobs_in_use: set[str] = set()
        instances: set[str] = set()
        async for obj in self.store.list(layout.SNAPSHOTS):
            instance = layout.instance_from_snapshot_key(obj.key)
            if instance is None:
                continue
            instances.add(instance)
            try:
                stored = await self._read(instance)
            except SerializationError:
                report.unreadable.append(obj.key)
                referenced.update(k for k in entries if f"/{instance}/" in k)
                continue
            if stored is None:
                continue
            report.instances += 1
            blobs_in_use.update(_blob_keys(stored))
            for task_id, slot in stored.ready.items():
                key = layout.ready_key(slot, instance, layout.encode_id(task_id))
                referenced.add(key)
                if key not in entries:
                    await self.store.put(key, _ENTRY)
                    report.entries_created += 1
        for key in entries - referenced:
            entry = layout.parse_ready_key(key)
            if entry is None or entry.ready_us < cutoff_us:
                await self.store.delete(key)
                report.entries_deleted += 1
        report.orphans_deleted += await self._delete_orphans(instances, blobs_in_use, cutoff_ms)
        report.debris_deleted = await self.store.discard_debris(grace.total_seconds())
        return report

    async def _delete_orphans(self, instances: set[str], blobs_in_use: set[str], cutoff_ms: int) -> int:
        # ``instances`` was listed before every snapshot was read: an instance missing from it
        # may have been created since, so only objects older than the grace period are orphans.
        deleted = 0
        async for obj in self.store.list(layout.BLOBS):
            stamp = obj.key[len(layout.BLOBS) :].partition("/")[2].split(".", 1)[0]
            old_enough = not stamp.isdigit() or int(stamp) < cutoff_ms
            if obj.key not in blobs_in_use and old_enough:
                await self.store.delete(obj.key)
                deleted += 1
        async for obj in self.store.list(layout.CANCELS):
            if obj.key[len(layout.CANCELS) : -len(layout.JSON_SUFFIX)] in instances:
                continue
            found = await self.store.get(obj.key)
            try:
                request = (
                    None if found is None else cancellation_from_json(loads(found.data, obj.key), obj.key)
                )
            except SerializationError:
                request = None
            if request is not None and _ms(request.requested_at) >= cutoff_ms:
                continue
            await self.store.delete(obj.key)
            deleted += 1
        now = self._clock.now()
        async for obj in self.store.list(layout.CLAIMS):
            if obj.key[len(layout.CLAIMS) :].partition("/")[0] in instances:
                continue
            try:
                claim = await self._read_claim(obj.key)
            except SerializationError:
                claim = None
            # A young claim may be the fencing token of a new instance: deleting it would let
            # the token start again at 1.
            if claim is not None and (claim[1].live(now) or _ms(claim[1].claimed_at) >= cutoff_ms):
                continue
            await self.store.delete(obj.key)
            deleted += 1
        return deleted


_ENTRY = dumps(envelope("ready", {}))


def _blob_keys(stored: _Snapshot) -> list[str]:
    values: list[Any] = [*stored.results.values(), stored.doc.get("initial_input")]
    state = stored.doc.get("state")
    if isinstance(state, dict):
        values.append(state.get("final_output"))
    return [v["blob"] for v in values if isinstance(v, dict) and isinstance(v.get("blob"), str)]
