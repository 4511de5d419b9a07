"""``ObjectStoreBackend``: the contract over any :class:`ConditionalStore`, as a thin facade.

The protocol (layout 2, ``docs/object-store.md``) lives in the modules beside this one: the
documents (:mod:`.documents`), the one compare-and-swap loop (:mod:`.cas`), blobs, claims, the
ready index, whole-state writes (:mod:`.writes`) and repair. Every change to a snapshot is a
compare-and-swap whose decision is taken on the copy it replaces, so fencing, first-wins results,
terminal states and incarnations hold atomically.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

from objstore_wfp.backends import layout
from objstore_wfp.backends.objectstore.blobs import Blobs
from objstore_wfp.backends.objectstore.cas import UNREAD, Keep, Write, _Unread
from objstore_wfp.backends.objectstore.claims import Claims
from objstore_wfp.backends.objectstore.control import Control
from objstore_wfp.backends.objectstore.documents import (
    ClaimRecord,
    Snapshot,
    lost,
    marker,
    marker_layout,
    same,
)
from objstore_wfp.backends.objectstore.leases import Leases
from objstore_wfp.backends.objectstore.ready import STALE_GRACE, ReadyIndex
from objstore_wfp.backends.objectstore.repair import RepairReport, repair
from objstore_wfp.backends.objectstore.signals import Inbox
from objstore_wfp.backends.objectstore.snapshots import Snapshots
from objstore_wfp.backends.objectstore.writes import Composer, unreferenced
from objstore_wfp.backends.validation import (
    check_claim,
    check_claim_for,
    check_duration,
    check_ids,
    check_limit,
    check_optional_task_id,
    check_output,
    check_payload,
    check_snapshot,
    check_text,
)
from objstore_wfp.clock import Clock, SystemClock
from objstore_wfp.contract import PersistentBackend
from objstore_wfp.errors import (
    ConflictError,
    NotFoundError,
    SerializationError,
    UnsupportedStoreError,
)
from objstore_wfp.ids import validate_id
from objstore_wfp.model import (
    AvailableTask,
    CancellationRequest,
    InProgress,
    PauseRequest,
    Signal,
    TaskClaim,
    TaskResult,
    WorkflowSnapshot,
)
from objstore_wfp.stores.base import ConditionalStore, StoredObject

log = logging.getLogger(__name__)

#: Outputs and inputs larger than this (bytes) live in their own ``blobs/`` objects.
INLINE_LIMIT = 256 * 1024
#: ``claim_available`` draws its candidates at random from this many times ``limit`` due entries.
SPREAD = 8
#: How long a poll skips an entry whose task it just lost to another claimer, when its own
#: claims have no TTL to go by.
LOST_RACE_HOLD = timedelta(seconds=30)


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

    supports_create = True

    def __init__(
        self,
        store: ConditionalStore,
        *,
        clock: Clock | None = None,
        inline_limit: int = INLINE_LIMIT,
        verify_conditional_writes: bool = True,
    ) -> None:
        """``verify_conditional_writes=False`` skips the store probe: only for stores you know
        enforce conditional writes, since claims are only as exclusive as the store makes them.
        Raises ``ValueError`` for a negative or non-int ``inline_limit`` (bytes)."""
        if isinstance(inline_limit, bool) or not isinstance(inline_limit, int) or inline_limit < 0:
            raise ValueError(f"inline_limit must be an int >= 0, got {inline_limit!r}")
        self.store = store
        self._clock = clock or SystemClock()
        self._blobs = Blobs(store, inline_limit)
        self._snapshots = Snapshots(store, self._blobs)
        leases = Leases(self._clock)
        self._index = ReadyIndex(store, self._snapshots, leases)
        self._claims = Claims(store, self._clock, self._snapshots, self._index, leases)
        self._inbox = Inbox(store, self._clock, self._snapshots, self._index, self._blobs)
        self._index.absorb = self._inbox.absorb
        self._control = Control(self._snapshots, self._index, self._blobs, self._clock)
        self._verify = verify_conditional_writes
        self._opened = False

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
        self._verify = False

    async def _ready(self) -> None:
        if self._opened:
            return
        if self._verify:
            await self.verify_store()
        await self._check_layout()
        self._opened = True

    async def _check_layout(self) -> None:
        """Refuse a store written in another layout; mark a new one with ours (one GET, and one
        PUT the first time)."""
        found = await self.store.get(layout.MARKER)
        if found is None:
            async for _ in self.store.list(layout.SNAPSHOTS):
                # Snapshots but no marker: layout 1, unless another process marked the root
                # and saved between our two reads.
                found = await self.store.get(layout.MARKER)
                if found is None:
                    raise SerializationError(
                        f"{self.store.url}: written with layout 1 (no {layout.MARKER}); this release "
                        f"reads layout {layout.LAYOUT_VERSION}: migrate or use a new prefix"
                    )
                break
            else:
                await self.store.put_if_absent(layout.MARKER, marker())
                return
        written = marker_layout(found, layout.MARKER)
        if written != layout.LAYOUT_VERSION:
            raise SerializationError(
                f"{self.store.url}: written with layout {written!r}; this release reads layout "
                f"{layout.LAYOUT_VERSION}"
            )

    async def close(self) -> None:
        await self.store.close()

    # -- whole snapshots ---------------------------------------------------------------------
    async def save_snapshot(self, snapshot: WorkflowSnapshot) -> str:
        check_snapshot(snapshot)
        await self._ready()
        return await self._write_snapshot(snapshot, create_only=False)

    async def create_snapshot(self, snapshot: WorkflowSnapshot) -> str:
        """Save ``snapshot`` as a new instance (a new incarnation): ``ConflictError`` if one
        exists. Two writes: the first task's index entry, then the snapshot (create-if-absent)."""
        check_snapshot(snapshot)
        await self._ready()
        return await self._write_snapshot(snapshot, create_only=True)

    async def _write_snapshot(self, snapshot: WorkflowSnapshot, *, create_only: bool) -> str:
        instance = layout.encode_id(snapshot.instance_id)
        composer = Composer(self._blobs, self._index, instance)

        async def decide(found: StoredObject | None) -> Write[tuple[bytes, Snapshot | None]]:
            old = self._parse_for_overwrite(found, instance, snapshot)
            if create_only and found is not None and not self._tombstone(found, instance):
                raise ConflictError(f"instance {snapshot.instance_id!r} already exists")
            if old is not None and old.terminal:
                raise ConflictError(f"instance {snapshot.instance_id!r} is {old.state}; its state is final")
            if snapshot.version is not None and (found is None or found.version != snapshot.version):
                raise ConflictError(
                    f"instance {snapshot.instance_id!r} moved since version {snapshot.version!r}"
                )
            data, _, _ = await composer.compose(snapshot, old, self._clock.now())
            return Write(data, (data, old))

        start: StoredObject | _Unread | Literal["remembered"] | None = (
            None if create_only else "remembered" if snapshot.version is not None else UNREAD
        )
        async with composer.discarded_on_error():
            (data, old), version = await self._snapshots.swap(
                instance, decide, what=f"instance {snapshot.instance_id!r}", start=start
            )
        assert version is not None
        written = self._snapshots.parse(StoredObject(data, version), instance)
        assert written is not None
        await self._after_write(composer, old, written)
        snapshot.version = version
        return version

    def _parse_for_overwrite(
        self, found: StoredObject | None, instance: str, snapshot: WorkflowSnapshot
    ) -> Snapshot | None:
        try:
            return self._snapshots.parse(found, instance)
        except SerializationError:
            if snapshot.version is not None:
                raise
            log.warning("overwriting unreadable snapshot of %r", snapshot.instance_id)
            return None

    def _tombstone(self, found: StoredObject, instance: str) -> bool:
        try:
            stored = self._snapshots.parse(found, instance, tombstone=True)
        except SerializationError:
            return False
        return stored is not None and stored.deleted

    async def _after_write(
        self, composer: Composer, old: Snapshot | None, written: Snapshot, holding: ClaimRecord | None = None
    ) -> None:
        """Entries go only after the write that stops referencing them (crash safety): those the
        old copy referenced and the new one does not, and the leased entry of ``holding`` (the
        claim the write finished) once its task is no longer ready."""
        stale = composer.leftovers(written.ready)
        if old is not None:
            stale += unreferenced(old, written.ready, holding)
        if holding is not None and holding.entry and holding.task_id not in written.ready:
            stale.append(holding.entry)
        await self._index.delete_quietly(stale)
        await composer.drop_unused_blobs(written.doc)

    async def load_snapshot(self, instance_id: str) -> WorkflowSnapshot:
        check_ids(instance_id)
        await self._ready()
        return await self._snapshots.reading(instance_id, self._snapshots.materialize)

    async def delete_snapshot(self, instance_id: str, *, if_version: str | None = None) -> None:
        """Delete the snapshot (conditionally on the copy read, where the store can), then what
        belonged to that incarnation: its index entries and blob folder. Its buffered signals go
        with the snapshot; inbox objects not absorbed yet name the incarnation, so nothing reads
        them as the next one's and the next poll deletes them. Claim objects stay as
        token high-water marks, released (each conditionally on the copy read); a claim of a
        deleted incarnation is dead anyway.

        ``if_version``: delete only that version (a copy the caller judged), else raise
        ``ConflictError``: a tool that decided from a read never removes what replaced it. A
        store without conditional delete cannot promise that: ``UnsupportedStoreError``.

        On a store without conditional delete (LocalStack, fake-gcs-server) the snapshot first
        becomes a tombstone by compare-and-swap, then is deleted: a write of the old incarnation
        made from an older copy is then refused by the store, even on an emulator whose delete is
        not atomic with a concurrent conditional write (fake-gcs-server lets such a write
        resurrect the object it deleted). A replace landing between the tombstone and the delete
        can still be removed there; a crash between them leaves the id listed, but not loadable,
        until it is deleted again. Raises ``NotFoundError``."""
        check_ids(instance_id)
        await self._ready()
        if if_version is not None and not self.store.supports_conditional_delete:
            raise UnsupportedStoreError(
                f"{self.store.url} cannot delete conditionally, so delete_snapshot(if_version=) could "
                "remove an instance that replaced the one judged; delete without if_version"
            )
        instance = layout.encode_id(instance_id)
        key = layout.snapshot_key(instance)
        while True:
            found = await self.store.get(key)
            if found is None:
                self._snapshots.forget(key)
                raise NotFoundError(f"no snapshot for instance {instance_id!r}")
            if if_version is not None and found.version != if_version:
                raise ConflictError(f"instance {instance_id!r} moved since version {if_version!r}")
            try:
                stored: Snapshot | None = self._snapshots.parse(found, instance, tombstone=True)
            except SerializationError:
                stored = None  # unreadable: repair() removes what it referenced
            if await self._delete_version(key, found, stored):
                break
        self._snapshots.forget(key)
        if stored is None:
            return
        await self._claims.clear(instance, stored.incarnation)
        await self._index.delete_quietly(
            layout.ready_key(slot, instance, layout.encode_id(t)) for t, slot in stored.ready.items()
        )
        blobs = [o.key async for o in self.store.list(layout.blob_prefix(instance, stored.incarnation))]
        await self._index.delete_quietly(blobs)

    async def _delete_version(self, key: str, found: StoredObject, stored: Snapshot | None) -> bool:
        """Delete ``found`` if it is still the current version; ``False`` if it moved."""
        if self.store.supports_conditional_delete:
            try:
                return await self.store.delete_if_version(key, found.version)
            except UnsupportedStoreError:
                pass  # an unprobed store just told the adapter it cannot delete conditionally
        if stored is not None and not stored.deleted:
            written = await self.store.put_if_version(key, stored.encode(deleted=True), found.version)
            if written is None:
                return False
        await self.store.delete(key)
        return True

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
                stored = await self._snapshots.read_quietly(instance)
                if stored is None:
                    continue
                decoded = stored.instance_id
            ids.append(decoded)
        return sorted(ids)

    # -- task results ------------------------------------------------------------------------
    async def save_task_result(
        self, instance_id: str, task_id: str, output: bytes, *, claim: TaskClaim | None = None
    ) -> None:
        check_ids(instance_id, task_id)
        data = check_output(output)
        check_claim_for(claim, instance_id, task_id)
        await self._ready()
        holding = await self._claims.holding(claim) if claim is not None else None
        incarnation = holding.incarnation if holding is not None else None
        instance = layout.encode_id(instance_id)
        composer = Composer(self._blobs, self._index, instance)

        async def decide(found: StoredObject | None) -> Write[Snapshot | None] | Keep[Snapshot | None]:
            stored = self._snapshots.parse(found, instance)
            if stored is None:
                raise NotFoundError(f"no snapshot for instance {instance_id!r}")
            if claim is not None and stored.fence_refuses(claim, incarnation):
                raise lost(claim)
            recorded = stored.results.get(task_id)
            if recorded is not None:
                if same(recorded, data):
                    return Keep(None)
                raise ConflictError(f"task {task_id!r} of {instance_id!r} already has another output")
            if stored.terminal:
                raise ConflictError(f"instance {instance_id!r} is {stored.state}; its state is final")
            value = await composer.stash(stored.incarnation, f"result {task_id}", data, self._clock.now())
            ready = {t: s for t, s in stored.ready.items() if t != task_id}
            return Write(stored.encode(results={**stored.results, task_id: value}, ready=ready), stored)

        async with composer.discarded_on_error():
            old, version = await self._snapshots.swap(instance, decide, what=f"instance {instance_id!r}")
        if version is None or old is None:
            await composer.drop_unused_blobs(None)
            return
        self._snapshots.forget(old.key)  # the written bytes are not kept; the next read refreshes
        done = unreferenced(old, {t: s for t, s in old.ready.items() if t != task_id}, holding)
        if claim is not None and holding is not None:
            self._claims.dismiss(claim)
            done += [holding.entry] if holding.entry else []
        await self._index.delete_quietly(done)

    async def load_task_result(self, instance_id: str, task_id: str) -> bytes | None:
        check_ids(instance_id, task_id)
        await self._ready()
        async def result(stored: Snapshot) -> bytes | None:
            value = stored.results.get(task_id)
            what = f"{stored.key} result {task_id!r}"
            return None if value is None else await self._blobs.unstash(value, what)

        return await self._snapshots.reading(instance_id, result)

    async def record_and_advance(
        self,
        claim: TaskClaim,
        output: bytes | None,
        advance: Callable[[WorkflowSnapshot], bool],
        *,
        reserve: timedelta | None = None,
        take: int = 1,
    ) -> tuple[WorkflowSnapshot, list[str]]:
        """Record ``output`` for ``claim``'s task (``None``: record nothing) and apply
        ``advance`` in ONE fenced compare-and-swap (see
        :meth:`PersistentBackend.record_and_advance`). With ``reserve``, the first ``take``
        tasks the write makes ready are kept out of polls for that long and returned, for the
        caller to claim next. The claim lapses rather than being released (the task is done;
        releasing would cost a write)."""
        check_claim_for(claim, claim.instance_id, claim.task_id)
        data = None if output is None else check_output(output)
        await self._ready()
        holding = await self._claims.holding(claim)
        incarnation = holding.incarnation
        instance = layout.encode_id(claim.instance_id)
        composer = Composer(self._blobs, self._index, instance)

        async def decide(
            found: StoredObject | None,
        ) -> Write[tuple[bytes, Snapshot, WorkflowSnapshot, list[str]]]:
            stored = self._snapshots.parse(found, instance)
            if stored is None:
                raise NotFoundError(f"no snapshot for instance {claim.instance_id!r}")
            if stored.fence_refuses(claim, incarnation):
                raise lost(claim)
            if stored.terminal:
                raise ConflictError(f"instance {claim.instance_id!r} is {stored.state}; its state is final")
            snapshot = await self._snapshots.materialize(stored)
            state = snapshot.state
            assert isinstance(state, InProgress)  # not terminal, checked above
            if data is not None:
                # Recorded as save_task_result records: the position is ``advance``'s to move.
                state.completed_tasks.setdefault(claim.task_id, TaskResult(claim.task_id, data))
            advance(snapshot)
            written, _, reserved = await composer.compose(
                snapshot,
                stored,
                self._clock.now(),
                recording=None if data is None else (claim.task_id, data),
                reserve=reserve,
                take=take,
            )
            return Write(written, (written, stored, snapshot, reserved))

        async with composer.discarded_on_error():
            (written, old, snapshot, reserved), version = await self._snapshots.swap(
                instance, decide, what=f"instance {claim.instance_id!r}"
            )
        assert version is not None
        new = self._snapshots.parse(StoredObject(written, version), instance)
        assert new is not None
        self._claims.dismiss(claim)
        await self._after_write(composer, old, new, holding)
        snapshot.version = version
        return snapshot, reserved

    # -- claims ------------------------------------------------------------------------------
    async def claim_task(
        self, instance_id: str, task_id: str, worker_id: str, ttl: timedelta | None
    ) -> TaskClaim | None:
        check_ids(instance_id, task_id, worker_id)
        check_duration(ttl, "ttl", optional=True)
        await self._ready()
        return await self._claims.claim(instance_id, task_id, worker_id, ttl)

    async def release_task_claim(self, instance_id: str, task_id: str, worker_id: str) -> None:
        check_ids(instance_id, task_id, worker_id)
        await self._ready()
        await self._claims.release(instance_id, task_id, worker_id)

    async def extend_task_claim(
        self, instance_id: str, task_id: str, worker_id: str, additional_duration: timedelta
    ) -> TaskClaim:
        check_ids(instance_id, task_id, worker_id)
        check_duration(additional_duration, "additional_duration")
        await self._ready()
        return await self._claims.extend(instance_id, task_id, worker_id, additional_duration)

    async def list_claims(self, instance_id: str | None = None) -> list[TaskClaim]:
        """Every claim that has a holder (live or expired, not released) in its instance's
        current incarnation, of one instance or all, sorted by instance and task; none of a
        final instance. Unreadable
        claim objects are skipped with a warning. Reads every claim object: for tools, not polls."""
        prefix = layout.CLAIMS
        if instance_id is not None:
            check_ids(instance_id)
            prefix += layout.encode_id(instance_id) + "/"
        await self._ready()
        return await self._claims.held(prefix)

    # -- finding work ------------------------------------------------------------------------
    async def find_available_tasks(self, worker_id: str, limit: int) -> list[AvailableTask]:
        validate_id(worker_id, "worker_id")
        check_limit(limit)
        if limit == 0:
            return []
        await self._ready()
        return await self._index.find(limit, self._clock.now())

    async def claim_available(
        self,
        worker_id: str,
        limit: int,
        ttl: timedelta | None,
        accept: Callable[[str, str, str], bool] = lambda instance_id, task_id, definition_hash: True,
    ) -> list[tuple[AvailableTask, TaskClaim]]:
        """Find and claim up to ``limit`` tasks (see :meth:`PersistentBackend.claim_available`).

        Candidates come from one LIST: the first ``SPREAD * limit`` due entries, in random order
        within each priority, so workers polling at once mostly try different tasks. Each costs
        a GET of its snapshot and a GET of its claim before the claim's write: a race lost to
        another worker costs two GETs, never a refused PUT."""
        validate_id(worker_id, "worker_id")
        check_limit(limit)
        check_duration(ttl, "ttl", optional=True)
        await self._ready()
        now = self._clock.now()
        candidates = await self._index.due(now, SPREAD * limit)
        random.shuffle(candidates)
        candidates.sort(key=lambda entry: entry.priority)
        won: list[tuple[AvailableTask, TaskClaim]] = []

        async def attempt(entry: layout.ReadyEntry) -> tuple[AvailableTask, TaskClaim] | None:
            offered = await self._index.offer(entry, now)
            if offered is None:
                return None
            stored, task_id = offered
            definition = str(stored.doc["definition_hash"])
            if not accept(stored.instance_id, task_id, definition):
                return None
            claim = await self._claims.claim(stored.instance_id, task_id, worker_id, ttl, current=stored)
            if claim is None:
                self._index.hold(entry.key, now + (ttl or LOST_RACE_HOLD))
                return None
            try:
                data = await self._snapshots.task_input(stored)
            except SerializationError:
                await self._claims.release(stored.instance_id, task_id, worker_id)
                raise
            return AvailableTask(stored.instance_id, task_id, data, definition, stored.priority), claim

        failed: BaseException | None = None
        while candidates and len(won) < limit and failed is None:
            batch, candidates = candidates[: limit - len(won)], candidates[limit - len(won) :]
            for outcome in await asyncio.gather(*(attempt(e) for e in batch), return_exceptions=True):
                if isinstance(outcome, SerializationError):
                    log.warning("skipping unreadable task: %s", outcome)
                elif isinstance(outcome, BaseException):
                    failed = failed or outcome
                elif outcome is not None:
                    won.append(outcome)
        # Claims won are the caller's even if another candidate failed: raising would leave
        # them held by a worker that does not know it holds them.
        if failed is not None and (not won or not isinstance(failed, Exception)):
            raise failed
        if failed is not None:
            log.warning("claimed %d task(s); another candidate failed: %s", len(won), failed)
        return won

    # -- cancellation and pause (:mod:`.control`) -------------------------------------------
    async def request_cancellation(self, instance_id: str, reason: str, requested_by: str) -> None:
        check_ids(instance_id)
        check_text(reason, "reason")
        check_text(requested_by, "requested_by")
        await self._ready()
        await self._control.request_cancellation(instance_id, reason, requested_by)

    async def get_cancellation_request(self, instance_id: str) -> CancellationRequest | None:
        check_ids(instance_id)
        await self._ready()
        stored = await self._snapshots.read(layout.encode_id(instance_id))
        return None if stored is None else stored.cancellation()

    async def clear_cancellation_request(self, instance_id: str) -> None:
        check_ids(instance_id)
        await self._ready()
        await self._control.clear_cancellation_request(instance_id)

    async def check_and_cancel(self, instance_id: str, interrupted_at_task: str | None = None) -> bool:
        check_ids(instance_id)
        check_optional_task_id(interrupted_at_task, "interrupted_at_task")
        await self._ready()
        return await self._control.check_and_cancel(instance_id, interrupted_at_task)

    async def pause_instance(self, instance_id: str, reason: str, requested_by: str) -> None:
        """One compare-and-swap of the snapshot; each ready task's entry moves to "never" first
        (a PUT each, and a DELETE each after), so polls spend nothing on a paused instance."""
        check_ids(instance_id)
        check_text(reason, "reason")
        check_text(requested_by, "requested_by")
        await self._ready()
        await self._control.set_pause(instance_id, PauseRequest(reason, requested_by, self._clock.now()))

    async def resume_instance(self, instance_id: str) -> None:
        """One compare-and-swap; ready tasks get entries due now (checked against their claims by
        polls), a wait's step one due when it is."""
        check_ids(instance_id)
        await self._ready()
        await self._control.set_pause(instance_id, None)

    async def get_pause_request(self, instance_id: str) -> PauseRequest | None:
        check_ids(instance_id)
        await self._ready()
        stored = await self._snapshots.read(layout.encode_id(instance_id))
        return None if stored is None else stored.pause_request()

    # -- signals -----------------------------------------------------------------------------
    async def send_signal(self, instance_id: str, name: str, payload: bytes) -> Signal:
        """One create-if-absent PUT of an inbox object after a GET of the snapshot (see
        :mod:`.signals`)."""
        check_ids(instance_id)
        validate_id(name, "name")
        data = check_payload(payload)
        await self._ready()
        return await self._inbox.send(instance_id, name, data)

    async def list_signals(self, instance_id: str, name: str | None = None) -> list[Signal]:
        check_ids(instance_id)
        if name is not None:
            validate_id(name, "name")
        await self._ready()
        return await self._inbox.pending(instance_id, name)

    async def deliver_signal(self, claim: TaskClaim) -> bytes | None:
        """Absorb the instance's inbox (a LIST, and a compare-and-swap if it holds signals),
        then consume the oldest pending signal and record it as the step's result in one
        compare-and-swap fenced by ``claim``."""
        check_claim(claim)
        await self._ready()
        return await self._inbox.deliver(claim, await self._claims.holding(claim))

    # -- maintenance -------------------------------------------------------------------------
    async def repair(self, *, grace: timedelta = STALE_GRACE) -> RepairReport:
        """Mend what crashes between two writes can leave behind; safe to run at any time and
        against any concurrent operation (it only deletes what it read as unreferenced and
        older than ``grace``, and never a claim). See :func:`.repair.repair`."""
        await self._ready()
        return await repair(self.store, self._snapshots, self._index, self._clock.now(), grace)
