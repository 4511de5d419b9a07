"""The ready index: small, empty objects whose keys list claimable work in dispatch order.

An entry is a hint, never the truth: the snapshot says which tasks are ready, the claim object
who holds one. Two kinds exist (see :mod:`objstore_wfp.backends.layout`):

- *fresh* entries are made by the snapshot write that makes a task ready, created *before* that
  write and removed *after* the write that makes the task not ready, and the snapshot records
  their slot; a crash leaves at worst an unreferenced entry, never a ready task without one;
- *leased* entries are placed by a claim at its lease's expiry (and by a worker that keeps the
  next task of a chain for itself), so a task under a live lease costs a poll nothing: its
  entry is not due. A claim writes its leased entry before deleting the fresh one.

Inbox objects (signals not yet absorbed, :mod:`.signals`) sort before every entry: a poll that
meets some absorbs them first and then lists again from after them, so it sees the entries the
absorption made due. A delayed step's entry is due at its wake time and a signal wait's at its
timeout, so waiting work costs a poll what a leased entry does: a key in the LIST, no GET.

A poll lists entries, skips those not yet due, reads the snapshot of each due candidate's
instance (once per instance) and, for a leased entry only, the claim: one GET per task returned
in the common case, two after a takeover or release.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import datetime, timedelta, timezone

from objstore_wfp.backends import layout
from objstore_wfp.backends.objectstore.documents import Snapshot, nonce
from objstore_wfp.backends.objectstore.leases import Leases, read_claim
from objstore_wfp.backends.objectstore.snapshots import Snapshots
from objstore_wfp.errors import SerializationError
from objstore_wfp.model import AvailableTask
from objstore_wfp.model.codec import dumps, envelope
from objstore_wfp.stores.base import ConditionalStore

log = logging.getLogger(__name__)

#: How long an unreferenced entry or blob may belong to a write still in flight.
STALE_GRACE = timedelta(minutes=10)
ENTRY = dumps(envelope("ready", {}))
_MEMO_SIZE = 4096


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def slot_due_us(slot: str) -> int:
    return int(slot.partition("/")[2].partition(".")[0])


def epoch_us(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


class ReadyIndex:
    """Writes, moves and reads the ready index of one store."""

    def __init__(self, store: ConditionalStore, snapshots: Snapshots, leases: Leases) -> None:
        self.store = store
        self.snapshots = snapshots
        self.leases = leases
        # Entries seen in polls (so a claim can move the one it was offered) and entries seen
        # under a live lease (so later polls skip them without a GET until the lease ends).
        self._seen: dict[tuple[str, str], str] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()
        #: Absorbs the inbox objects of one instance for a poll at a time (set by the backend:
        #: see :mod:`.signals`).
        self.absorb: Callable[[str, list[str], datetime], Awaitable[None]] | None = None

    # -- writing -----------------------------------------------------------------------------
    @staticmethod
    def fresh_slot(priority: int, now: datetime) -> str:
        return layout.ready_slot(priority, epoch_us(now), layout.FRESH, nonce())

    @staticmethod
    def leased_slot(priority: int, due: datetime | None) -> str:
        due_us = layout.NEVER_US if due is None else epoch_us(due)
        return layout.ready_slot(priority, due_us, layout.LEASED, nonce())

    async def put(self, keys: Iterable[str]) -> None:
        await asyncio.gather(*(self.store.put(k, ENTRY) for k in keys))

    async def delete_quietly(self, keys: Iterable[str]) -> None:
        """Best-effort cleanup: an entry that survives is a hint readers check and remove."""
        keys = list(dict.fromkeys(keys))
        outcomes = await asyncio.gather(*(self.store.delete(k) for k in keys), return_exceptions=True)
        for key, outcome in zip(keys, outcomes, strict=True):
            if isinstance(outcome, Exception):
                log.warning("could not delete %s: %s", key, outcome)

    def seen(self, instance: str, task: str) -> str | None:
        with self._lock:
            return self._seen.get((instance, task))

    async def move(self, stored: Snapshot, instance: str, task_id: str, due: datetime | None) -> str:
        """Move the entries of ``task_id`` (ready in ``stored``) to ``due`` (``None``: never):
        write a leased entry, then delete the one ``stored`` references and the one a poll
        offered. Returns the leased entry's key."""
        task = layout.encode_id(task_id)
        key = layout.ready_key(self.leased_slot(stored.priority, due), instance, task)
        await self.put([key])
        old = [layout.ready_key(stored.ready[task_id], instance, task), self.seen(instance, task)]
        await self.delete_quietly(k for k in old if k is not None and k != key)
        with self._lock:
            self._seen.pop((instance, task), None)
        return key

    # -- finding -----------------------------------------------------------------------------
    async def find(self, limit: int, now: datetime) -> list[AvailableTask]:
        """At most ``limit`` claimable tasks, most urgent first, then oldest due first."""
        now_us = epoch_us(now)
        found: list[tuple[tuple[int, int, str, str], AvailableTask]] = []
        listing = aiter(self._listing(now))
        read: dict[str, Snapshot | None] = {}
        exhausted = False
        while not exhausted:
            # Read the candidates still needed concurrently: one round trip per batch, not per task.
            batch: list[layout.ReadyEntry] = []
            wanted = max(limit - len(found), 1)
            while len(batch) < wanted:
                try:
                    entry = await anext(listing)
                except StopAsyncIteration:
                    exhausted = True
                    break
                if entry.due_us > now_us or self._still_held(entry.key, now_us):
                    continue
                # The listing orders by priority and due time; tasks that tie there are ordered
                # by instance and task id below, so read on until the tie at the limit is complete.
                if len(found) >= limit and (entry.priority, entry.due_us) != found[-1][0][:2]:
                    exhausted = True
                    break
                batch.append(entry)
            for entry, task in await self._available(batch, read, now):
                found.append(((entry.priority, entry.due_us, task.instance_id, task.task_id), task))
        found.sort(key=lambda item: item[0])
        unique: dict[tuple[str, str], AvailableTask] = {}
        for _, task in found:
            unique.setdefault((task.instance_id, task.task_id), task)
        return list(unique.values())[:limit]

    async def due(self, now: datetime, count: int) -> list[layout.ReadyEntry]:
        """The first ``count`` entries due at ``now`` in dispatch order, from LIST pages only."""
        now_us = epoch_us(now)
        entries: list[layout.ReadyEntry] = []
        async for entry in self._listing(now):
            if entry.due_us > now_us or self._still_held(entry.key, now_us):
                continue
            entries.append(entry)
            if len(entries) >= count:
                break
        return entries

    async def _listing(self, now: datetime) -> AsyncIterator[layout.ReadyEntry]:
        """The entries of the index in key order. Inbox objects, which come first, are absorbed
        (all instances at once, for a poll at ``now``: a wait they wake is due then) before the
        first entry is yielded; then the listing starts again after them, so entries the
        absorption wrote are in it. One LIST page when there are none."""
        inbox: dict[str, list[str]] = {}
        last = None
        async for obj in self.store.list(layout.READY):
            parsed = layout.parse_inbox_key(obj.key)
            if parsed is not None:
                inbox.setdefault(parsed[0], []).append(obj.key)
                last = obj.key
                continue
            if obj.key.startswith(layout.INBOX):
                continue  # a foreign key in the inbox: not ours
            if inbox:
                break
            entry = layout.parse_ready_key(obj.key)
            if entry is not None:
                yield entry
        else:
            if not inbox:
                return
        assert self.absorb is not None and last is not None
        absorb = self.absorb
        outcomes = await asyncio.gather(
            *(absorb(i, keys, now) for i, keys in inbox.items()), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, SerializationError):
                log.warning("could not absorb signals: %s", outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
        async for obj in self.store.list(layout.READY, start_after=last):
            entry = layout.parse_ready_key(obj.key)
            if entry is not None:
                yield entry

    def hold(self, key: str, until: datetime) -> None:
        """Skip ``key`` in this backend's polls until ``until``: its task was just claimed by
        someone else, whose claim moves the entry (or, if it dies first, expires)."""
        with self._lock:
            if len(self._held) >= _MEMO_SIZE:
                self._held.clear()
            self._held[key] = epoch_us(until)

    async def offer(self, entry: layout.ReadyEntry, now: datetime) -> tuple[Snapshot, str] | None:
        """The current snapshot and ready task an entry stands for, or ``None`` (a stale entry
        past the grace period is deleted). One GET."""
        stored = await self.snapshots.read_quietly(entry.instance)
        task_id = _ready_task(stored, entry)
        if stored is None or task_id is None:
            if epoch_us(now) - entry.due_us > STALE_GRACE // timedelta(microseconds=1):
                await self.delete_quietly([entry.key])
            return None
        if stored.held_back or not stored.offers(task_id, now):
            return None
        return stored, task_id

    def _still_held(self, key: str, now_us: int) -> bool:
        with self._lock:
            until = self._held.get(key)
            if until is not None and until <= now_us:
                del self._held[key]
                until = None
        return until is not None

    async def _available(
        self,
        batch: list[layout.ReadyEntry],
        read: dict[str, Snapshot | None],
        now: datetime,
    ) -> list[tuple[layout.ReadyEntry, AvailableTask]]:
        """The entries of ``batch`` that stand for claimable tasks. Snapshots are read first
        (each instance once), then the claims of leased entries whose task is still ready."""
        unread = list(dict.fromkeys(e.instance for e in batch if e.instance not in read))
        copies = await asyncio.gather(*(self.snapshots.read_quietly(i) for i in unread))
        read.update(zip(unread, copies, strict=True))
        ready: list[tuple[layout.ReadyEntry, Snapshot, str]] = []
        stale: list[str] = []
        grace_us = STALE_GRACE // timedelta(microseconds=1)
        for entry in batch:
            stored = read[entry.instance]
            task_id = _ready_task(stored, entry)
            if stored is None or task_id is None:
                if epoch_us(now) - entry.due_us > grace_us:
                    stale.append(entry.key)
                continue
            if not stored.held_back and stored.offers(task_id, now):
                ready.append((entry, stored, task_id))
        if stale:
            await self.delete_quietly(stale)

        async def claimable(entry: layout.ReadyEntry, stored: Snapshot, task_id: str) -> bool:
            # The fresh entry the snapshot references, of a task without a fence, had no claim
            # of this incarnation when it became ready, and a claim since then moved it out of
            # sight. Any other entry needs its claim read: a leased one; a fresh one of a task
            # an early claim fenced; a stray fresh one (a retried write's, a failed delete's).
            if (
                not entry.leased
                and task_id not in stored.fences
                and layout.ready_key(stored.ready[task_id], entry.instance, entry.task) == entry.key
            ):
                return True
            key = layout.claim_key(entry.instance, entry.task)
            try:
                read = await read_claim(self.store, key)
            except SerializationError as exc:
                log.warning("skipping task with unreadable claim: %s", exc)
                return False
            if read is None or read[1].incarnation != stored.incarnation or read[1].holder is None:
                return True
            left = self.leases.remaining(key, *read)
            if left is None:
                return False
            if left <= 0:
                return True
            self.hold(entry.key, now + timedelta(seconds=left))  # in this poller's clock
            return False

        verdicts = await asyncio.gather(*(claimable(e, s, t) for e, s, t in ready))
        available = []
        for (entry, stored, task_id), ok in zip(ready, verdicts, strict=True):
            if not ok:
                continue
            try:
                task_input = await self.snapshots.task_input(stored)
            except SerializationError as exc:
                log.warning("skipping task with unreadable input: %s", exc)
                continue
            with self._lock:
                if len(self._seen) >= _MEMO_SIZE:
                    self._seen.clear()
                self._seen[(entry.instance, entry.task)] = entry.key
            definition = str(stored.doc["definition_hash"])
            task = AvailableTask(stored.instance_id, task_id, task_input, definition, stored.priority)
            available.append((entry, task))
        return available


def _ready_task(stored: Snapshot | None, entry: layout.ReadyEntry) -> str | None:
    """The ready task an entry stands for, if its snapshot has it ready."""
    if stored is None or stored.terminal:
        return None
    for task_id in stored.ready:
        if layout.encode_id(task_id) == entry.task:
            return task_id
    return None
