"""Claims: leases with fencing tokens, one object per task, changed only by compare-and-swap.

- Mutual exclusion: the first claim of a task is a create-if-absent; every later one replaces
  the object it read by compare-and-swap, so of N racing claimers exactly one write succeeds.
- Tokens never repeat: the object is never deleted (not by release, delete or repair); it is the
  task's token high-water mark, across incarnations too.
- Incarnations: a claim records the incarnation of the snapshot it was taken against; for any
  other incarnation it is dead (free to take over, unable to record).
- Atomic fencing: a claim that replaces a holding of the same incarnation (a takeover, or a claim
  after release) publishes its token into the snapshot's ``fences`` before it is returned. Every
  fenced write is a compare-and-swap of the snapshot that checks the incarnation and the fence,
  so once the claim is returned no write of an older token can land, however long its writer
  stalled (Kleppmann, "How to do distributed locking", 2016; SlateDB's writer epoch).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from objstore_wfp.backends import layout
from objstore_wfp.backends.objectstore.cas import UNREAD, Keep, Write, _Unread, compare_and_swap
from objstore_wfp.backends.objectstore.documents import ClaimRecord, Snapshot, lost, parse_claim
from objstore_wfp.backends.objectstore.leases import Leases, read_claim
from objstore_wfp.backends.objectstore.ready import ReadyIndex, epoch_us, slot_due_us
from objstore_wfp.backends.objectstore.snapshots import Snapshots
from objstore_wfp.backends.validation import expiry
from objstore_wfp.clock import Clock, window
from objstore_wfp.errors import ClaimLostError, NotFoundError, SerializationError
from objstore_wfp.model import TaskClaim
from objstore_wfp.stores.base import ConditionalStore, StoredObject

log = logging.getLogger(__name__)

#: Claims this backend granted and still remembers (so renewals and fenced writes skip a read).
GRANTS_SIZE = 4096


@dataclass(frozen=True)
class Grant:
    """A claim this backend wrote: the object as written (its version; its bytes are re-encoded
    with a new nonce, so only ever parsed back into the same record)."""

    stored: StoredObject
    record: ClaimRecord


class Claims:
    """Claim, renew, release and check the claims of one store."""

    def __init__(
        self, store: ConditionalStore, clock: Clock, snapshots: Snapshots, index: ReadyIndex, leases: Leases
    ) -> None:
        self.store = store
        self.clock = clock
        self.leases = leases
        self.snapshots = snapshots
        self.index = index
        self._grants: OrderedDict[tuple[str, str], Grant] = OrderedDict()
        self._lock = threading.Lock()

    # -- the grant memo ----------------------------------------------------------------------
    def _grant(self, key: str, worker_id: str) -> Grant | None:
        with self._lock:
            return self._grants.get((key, worker_id))

    def _remember(self, key: str, record: ClaimRecord, version: str) -> None:
        assert record.holder is not None
        with self._lock:
            self._grants[(key, record.holder)] = Grant(StoredObject(record.to_bytes(), version), record)
            self._grants.move_to_end((key, record.holder))
            while len(self._grants) > GRANTS_SIZE:
                self._grants.popitem(last=False)

    def _forget(self, key: str, worker_id: str) -> None:
        with self._lock:
            self._grants.pop((key, worker_id), None)

    def _known(self, key: str, worker_id: str) -> StoredObject | _Unread | None:
        grant = self._grant(key, worker_id)
        return UNREAD if grant is None else grant.stored

    # -- reading -----------------------------------------------------------------------------
    async def _current(self, instance: str, incarnation: str | None) -> bool:
        """Whether ``incarnation`` is the instance's current one (``None``: no snapshot exists),
        on a fresh read: a cached copy may hold an incarnation deleted since."""
        stored = await self.snapshots.read(instance)
        return (stored.incarnation if stored is not None else None) == incarnation

    async def holding(self, claim: TaskClaim) -> ClaimRecord:
        """The stored record of ``claim`` if its holder may still act on it (see
        :func:`~objstore_wfp.backends.objectstore.leases.window`); else ``ClaimLostError``.
        No request when this backend granted the claim itself: its own send time is known."""
        key = _key(claim.instance_id, claim.task_id)
        grant = self._grant(key, claim.worker_id)
        if grant is not None and grant.record.token == claim.token:
            record: ClaimRecord | None = grant.record
            held = self.leases.holds(grant.record)
        else:
            read = await read_claim(self.store, key)
            record = None if read is None else read[1]
            held = (
                read is not None
                and read[1].holder is not None
                and (read[1].ttl is None or self.leases.age(key, *read) < window(read[1].ttl))
            )
        if record is None or not held or (record.holder, record.token) != (claim.worker_id, claim.token):
            raise lost(claim)
        return record

    # -- claiming ----------------------------------------------------------------------------
    async def claim(
        self,
        instance_id: str,
        task_id: str,
        worker_id: str,
        ttl: timedelta | None,
        *,
        current: Snapshot | _Unread | None = UNREAD,
    ) -> TaskClaim | None:
        """Take the task's lease (``None`` while a live claim exists). The claim binds to the
        incarnation of ``current``, a copy the caller has just read; by default the snapshot is
        read now, unless this backend reserved the task for its own next claim (a chaining
        worker, whose input comes from the copy it wrote). A cached copy may be of an
        incarnation deleted since, and a claim bound to it would be dead on arrival."""
        instance = layout.encode_id(instance_id)
        task = layout.encode_id(task_id)
        key = _key(instance_id, task_id)
        stored: Snapshot | None
        if isinstance(current, _Unread):
            cached = self.snapshots.cached(instance)
            if cached is not None and _reserved(cached, task_id, self.clock.now()):
                stored = cached
            else:
                try:
                    stored = await self.snapshots.read(instance)
                except SerializationError:
                    stored = None  # an unreadable snapshot offers nothing; the claim binds to nothing
        else:
            stored = current
        incarnation = stored.incarnation if stored is not None else None
        replaced: list[ClaimRecord] = []
        placed: list[str] = []  # a leased entry written before the claim
        old_slot: list[str] = []  # the entry the snapshot references, when this claim moves it
        fenced: list[Snapshot | None] = []  # the snapshot after an early claim's fence

        async def decide(found: StoredObject | None) -> Write[ClaimRecord | None] | Keep[ClaimRecord | None]:
            nonlocal incarnation
            replaced.clear()
            if found is not None:
                old = parse_claim(found, key)
                if old.incarnation != incarnation:
                    # Believe a cached incarnation that disagrees with the claim only after a
                    # fresh read: stealing a live claim of the current one would break mutual
                    # exclusion, and a claim bound to a deleted one is dead on arrival.
                    # Incarnation ids are never reused.
                    fresh = await self.snapshots.read(instance)
                    incarnation = fresh.incarnation if fresh is not None else None
                if self.leases.live(key, found, old) and old.incarnation == incarnation:
                    return Keep(None)
                replaced.append(old)
            # Read after the lease it replaces was judged over, so claimed_at never precedes it.
            now = self.clock.now()
            token = replaced[0].token + 1 if replaced else 1
            expires = None if ttl is None else expiry(now, ttl)
            stamp = self.leases.stamp()  # before the write is sent: the lease runs from here
            entry = None
            old_slot.clear()
            current = stored if stored is not None and stored.incarnation == incarnation else None
            slot = current.ready.get(task_id) if current is not None else None
            if current is not None and slot is not None:
                if _reserved(current, task_id, now):
                    entry = layout.ready_key(slot, instance, task)  # kept for this claimer
                elif placed:
                    entry = placed[0]
                else:
                    old_slot.append(layout.ready_key(slot, instance, task))
                    entry = layout.ready_key(
                        self.index.leased_slot(current.priority, expires), instance, task
                    )
                    if layout.slot_kind(slot) == layout.FRESH:
                        # A fresh entry is offered without a claim check, so it must be out of
                        # sight before the claim exists: a crash in between would leave a held
                        # task offered. Moved first, a crash leaves the task unclaimed and its
                        # entry due at the lease's expiry, as if this claimer had died holding it.
                        await self.index.put([entry])
                        placed.append(entry)
                        seen = self.index.seen(instance, task)
                        await self.index.delete_quietly(
                            [layout.ready_key(slot, instance, task), *([seen] if seen else [])]
                        )
            record = ClaimRecord(
                instance_id, task_id, incarnation, worker_id, token, now, expires, entry, _seconds(ttl), stamp
            )
            fenced.clear()
            if entry is None and incarnation is not None:
                # A task not ready (in this view) gets its fence before the claim exists: a
                # write that makes it ready then gives it an entry that polls check against the
                # claim, whenever this claimer dies. Fencing a token not (yet) held refuses only
                # older ones, whose holdings this claim replaces anyway.
                fenced.append(await self._publish_fence(instance, record))
            return Write(record.to_bytes(), record)

        # A task reserved for a chaining worker is claimed blind (one request). A task any poll
        # may offer is read first: a lost race then costs a GET instead of a refused PUT, which
        # S3 bills 12.5 times as much.
        reserved = stored is not None and _reserved(stored, task_id, self.clock.now())
        record, version = await compare_and_swap(
            self.store,
            key,
            decide,
            known=None if reserved else UNREAD,
            what=f"claim on task {task_id!r} of {instance_id!r}",
        )
        if record is None or version is None:
            await self.index.delete_quietly(placed)  # moved for nothing: the winner has its own
            return None
        current = stored if stored is not None and stored.incarnation == record.incarnation else None
        # Publish the token where a fenced write will see it: after a takeover or a release (an
        # older holder of this incarnation exists) and over a holding of another incarnation (it
        # may have been written over a holder of this one by a worker with a stale view); a
        # claim released by the delete of its instance hides no one. A task not ready yet got
        # its fence before the claim (above).
        previous = replaced[0] if replaced and replaced[0].incarnation == record.incarnation else None
        hid = replaced and replaced[0].holder is not None
        if fenced:
            current = fenced[0]
        elif record.incarnation is not None and (previous or hid):
            current = await self._publish_fence(instance, record)
        stale = [previous.entry if previous else None, self.index.seen(instance, task)]
        if old_slot and not placed:
            # A due leased entry (a takeover, or a released task): checked by polls, so it may
            # move after the claim: the new one first, then the old ones.
            assert record.entry is not None
            await self.index.put([record.entry])
            stale += old_slot
        elif record.entry is None and current is not None and task_id in current.ready:
            # Made ready by a write that landed before this early claim's fence: move its entry.
            moved = await self.index.move(current, instance, task_id, record.expires_at)
            record = replace(record, entry=moved)
            version = await self._record_entry(key, record, version)
        await self.index.delete_quietly(k for k in stale if k is not None and k != record.entry)
        self._remember(key, record, version)
        return replace(record.public(), takeover=previous is not None)

    async def _record_entry(self, key: str, record: ClaimRecord, version: str) -> str:
        """Write ``record`` (the claim just taken, now naming its entry) over ``version``; on a
        lost race (the claim moved on already) keep the old version: the entry is then a hint
        that polls check and clean up."""
        written = await self.store.put_if_version(key, record.to_bytes(), version)
        return written or version

    async def _publish_fence(self, instance: str, record: ClaimRecord) -> Snapshot | None:
        """Raise the snapshot's fence for the task to the new token (see the module docstring);
        return the snapshot as it now stands, or ``None`` if ``record``'s incarnation is gone."""

        async def decide(found: StoredObject | None) -> Write[bytes | None] | Keep[bytes | None]:
            stored = self.snapshots.parse(found, instance)
            if stored is None or stored.incarnation != record.incarnation:
                return Keep(None)  # another incarnation: the old holder cannot write there anyway
            if stored.fences.get(record.task_id, 0) >= record.token:
                return Keep(None)
            data = stored.encode(fences={**stored.fences, record.task_id: record.token})
            return Write(data, data)

        data, version = await self.snapshots.swap(
            instance, decide, what=f"fence of task {record.task_id!r} of {record.instance_id!r}"
        )
        if data is not None and version is not None:
            return self.snapshots.parse(StoredObject(data, version), instance)
        current = self.snapshots.cached(instance)
        return current if current is not None and current.incarnation == record.incarnation else None

    # -- renewing and releasing --------------------------------------------------------------
    async def _update_holding(
        self,
        instance_id: str,
        task_id: str,
        worker_id: str,
        change: Callable[[ClaimRecord, datetime], ClaimRecord],
    ) -> tuple[ClaimRecord, ClaimRecord, str]:
        """Rewrite this worker's holding by compare-and-swap with ``change``; return the record
        replaced, the record written and its version."""
        instance = layout.encode_id(instance_id)
        key = _key(instance_id, task_id)

        async def decide(found: StoredObject | None) -> Write[tuple[ClaimRecord, ClaimRecord]]:
            record = None if found is None else parse_claim(found, key)
            if record is None or record.holder is None:
                raise NotFoundError(f"no claim on task {task_id!r} of {instance_id!r}")
            if not await self._current(instance, record.incarnation):
                raise NotFoundError(
                    f"the claim on task {task_id!r} of {instance_id!r} was removed with its instance"
                )
            if record.holder != worker_id:
                raise ClaimLostError(f"task {task_id!r} of {instance_id!r} is held by another worker")
            updated = change(record, self.clock.now())
            return Write(updated.to_bytes(), (record, updated))

        (old, record), version = await compare_and_swap(
            self.store,
            key,
            decide,
            known=self._known(key, worker_id),
            what=f"claim on task {task_id!r} of {instance_id!r}",
        )
        assert version is not None
        return old, record, version

    async def extend(
        self, instance_id: str, task_id: str, worker_id: str, additional: timedelta
    ) -> TaskClaim:
        def renewed(record: ClaimRecord, now: datetime) -> ClaimRecord:
            if record.ttl is None:
                return replace(record, stamp=self.leases.stamp())
            expires = expiry(now, additional)
            return replace(record, expires_at=expires, ttl=_seconds(additional), stamp=self.leases.stamp())

        key = _key(instance_id, task_id)
        _, record, version = await self._update_holding(instance_id, task_id, worker_id, renewed)
        entry = layout.parse_ready_key(record.entry) if record.entry else None
        if entry is not None and record.expires_at is not None and entry.due_us > epoch_us(record.expires_at):
            # A shortened lease: its entry would keep the task out of polls past the lease's end.
            moved = layout.ready_key(
                self.index.leased_slot(entry.priority, record.expires_at), entry.instance, entry.task
            )
            await self.index.put([moved])
            record = replace(record, entry=moved)
            version = await self._record_entry(key, record, version)
            await self.index.delete_quietly([entry.key])
        self._remember(key, record, version)
        return record.public()

    async def release(self, instance_id: str, task_id: str, worker_id: str) -> None:
        instance = layout.encode_id(instance_id)
        task = layout.encode_id(task_id)
        key = _key(instance_id, task_id)
        # Claimable at once: a due entry takes the leased one's place, written before the
        # release so that a crash in between leaves the task offered (the claim check in find
        # sees who holds it), never hidden until the old lease's expiry.
        current = await self.snapshots.current_or_cached(instance)
        due = None
        if current is not None and task_id in current.ready:
            # A paused instance's task stays hidden: due never, until resuming moves it.
            when = None if current.pause is not None else self.clock.now()
            due = layout.ready_key(self.index.leased_slot(current.priority, when), instance, task)
            await self.index.put([due])
        old, _, _ = await self._update_holding(instance_id, task_id, worker_id, lambda r, _: r.released())
        self._forget(key, worker_id)
        stale = [old.entry, self.index.seen(instance, task)]
        if current is not None and task_id in current.ready:
            stale.append(layout.ready_key(current.ready[task_id], instance, task))
        await self.index.delete_quietly(k for k in stale if k is not None and k != due)

    async def clear(self, instance: str, incarnation: str | None) -> None:
        """Release every holding taken in ``incarnation`` (or before any existed) of a deleted
        instance, each conditionally on the copy read (a claim that moved meanwhile belongs to
        someone acting on a newer incarnation and is left alone), and remove its entry."""
        async for obj in self.store.list(f"{layout.CLAIMS}{instance}/"):
            found = await self.store.get(obj.key)
            if found is None:
                continue
            try:
                record = parse_claim(found, obj.key)
            except SerializationError:
                continue
            if record.holder is None or record.incarnation not in (None, incarnation):
                continue
            if await self.store.put_if_version(obj.key, record.released().to_bytes(), found.version):
                await self.index.delete_quietly([record.entry] if record.entry else [])

    def dismiss(self, claim: TaskClaim) -> None:
        """Forget a grant whose task is finished (its claim just lapses)."""
        self._forget(_key(claim.instance_id, claim.task_id), claim.worker_id)

    # -- listing -----------------------------------------------------------------------------
    async def held(self, prefix: str) -> list[TaskClaim]:
        """Every claim under ``prefix`` that has a holder in its instance's current incarnation,
        unless the instance is final (a worker lets a finished task's claim lapse rather than
        spend a write releasing it: a final instance's claims mean nothing)."""
        claims = []
        snapshots: dict[str, Snapshot | None] = {}
        async for obj in self.store.list(prefix):
            try:
                read = await read_claim(self.store, obj.key)
            except SerializationError as exc:
                log.warning("skipping unreadable claim: %s", exc)
                continue
            if read is None or read[1].holder is None:
                continue
            found, record = read
            instance = layout.encode_id(record.instance_id)
            if instance not in snapshots:
                snapshots[instance] = await self.snapshots.read_quietly(instance)
            stored = snapshots[instance]
            incarnation = stored.incarnation if stored is not None else None
            if record.incarnation == incarnation and not (stored and stored.terminal):
                # The expiry in this backend's clock: now plus what the lease has left.
                left = self.leases.remaining(obj.key, found, record)
                expires = None if left is None else self.clock.now() + timedelta(seconds=left)
                claims.append(replace(record, expires_at=expires).public())
        return sorted(claims, key=lambda c: (c.instance_id, c.task_id))


def _reserved(stored: Snapshot, task_id: str, now: datetime) -> bool:
    """Whether ``task_id``'s entry is leased into the future (kept for a chaining worker)."""
    slot = stored.ready.get(task_id)
    return slot is not None and layout.slot_kind(slot) == layout.LEASED and slot_due_us(slot) > epoch_us(now)


def _seconds(ttl: timedelta | None) -> float | None:
    return None if ttl is None else ttl.total_seconds()


def _key(instance_id: str, task_id: str) -> str:
    return layout.claim_key(layout.encode_id(instance_id), layout.encode_id(task_id))
