"""Signals: one create-if-absent PUT to send, absorbed into the snapshot by compare-and-swap.

A signal is sent as an inbox object ``ready/0/<I>/<seq>`` (:mod:`objstore_wfp.backends.layout`):
the sender reads the snapshot (it must exist and not be final) and creates the object at the
next free ``seq``; that write is the only one. Inbox objects sort before every ready entry, so a
poll's LIST of the ready index meets them first, at no extra request, and absorbs them: one
compare-and-swap of the snapshot moves them into its ``signals`` (and, when the workflow waits
for that name, gives the wait's step an entry due now), then they are deleted. A signal is thus
never polled for twice: buffered signals live in the snapshot, which a poll reads only for work.

Exactly once: the snapshot remembers the nonces of the inbox objects it absorbed last, so an
object absorbed twice (two pollers at once, or a crash before its deletion) counts once; a
signal is consumed by ``ObjectStoreBackend.deliver_signal`` in the same compare-and-swap that
records it as the step's result. ``seq`` is unique per instance (create-if-absent); a sender
that read the snapshot before a signal of the same ``seq`` was absorbed and deleted can create
that key again; the absorber then numbers it after the highest ``seq`` given out (the sender was
told the lower one).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from dataclasses import replace
from datetime import datetime
from typing import Any

from objstore_wfp.backends import layout
from objstore_wfp.backends.objectstore.blobs import Blobs
from objstore_wfp.backends.objectstore.cas import Decision, Keep, Write
from objstore_wfp.backends.objectstore.documents import (
    ClaimRecord,
    InboxSignal,
    Snapshot,
    lost,
    nonce,
    parse_inbox,
)
from objstore_wfp.backends.objectstore.ready import ReadyIndex, epoch_us, slot_due_us
from objstore_wfp.backends.objectstore.snapshots import Snapshots
from objstore_wfp.backends.objectstore.writes import Composer, unreferenced
from objstore_wfp.backoff import MAX_CAS_ATTEMPTS
from objstore_wfp.clock import Clock
from objstore_wfp.errors import ConflictError, NotFoundError, SerializationError, StoreUnavailableError
from objstore_wfp.model import AtSignal, Signal, TaskClaim
from objstore_wfp.stores.base import ConditionalStore, StoredObject

log = logging.getLogger(__name__)

#: Nonces of absorbed inbox objects a snapshot remembers. An absorbed object left behind (its
#: absorber crashed before deleting it) sorts first in the instance's inbox, so the next
#: absorption meets it before any newer one: a short memory suffices.
KEEP_ABSORBED = 64
_MEMO_SIZE = 4096


class Inbox:
    """Send, absorb and list the signals of one store."""

    def __init__(
        self, store: ConditionalStore, clock: Clock, snapshots: Snapshots, index: ReadyIndex, blobs: Blobs
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.clock = clock
        self.snapshots = snapshots
        self.index = index
        # The last seq this backend gave each instance (per incarnation): a burst from one
        # sender skips the numbers it took itself without a refused write each.
        self._issued: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._lock = threading.Lock()

    # -- delivering --------------------------------------------------------------------------
    async def deliver(self, claim: TaskClaim, holding: ClaimRecord) -> bytes | None:
        """Absorb the instance's inbox (a LIST, and a compare-and-swap if it holds signals),
        then consume the oldest pending signal of the wait at ``claim``'s step and record it as
        the step's result in one compare-and-swap fenced by ``claim`` (``holding`` is its stored
        record). Returns the payload, the result recorded before (a retry), or ``None``."""
        instance = layout.encode_id(claim.instance_id)
        await self.absorb(instance)
        composer = Composer(self.blobs, self.index, instance)

        async def decide(stored: Snapshot) -> Write[tuple[bytes, dict[str, str]]] | Keep[Any]:
            if stored.fence_refuses(claim, holding.incarnation):
                raise lost(claim)
            recorded = stored.results.get(claim.task_id)
            if recorded is not None:
                return Keep(recorded)
            if stored.terminal:
                raise ConflictError(f"instance {claim.instance_id!r} is {stored.state}; its state is final")
            wait = stored.wait()
            if not isinstance(wait, AtSignal) or wait.step_id != claim.task_id:
                raise ConflictError(
                    f"instance {claim.instance_id!r} does not wait for a signal at step {claim.task_id!r}"
                )
            signal = stored.pending(wait.signal_name)
            if signal is None:
                return Keep(None)
            value = await composer.stash(
                stored.incarnation, f"result {claim.task_id}", signal.payload, self.clock.now()
            )
            rest = tuple(s for s in stored.signals if s is not signal)
            ready = {t: s for t, s in stored.ready.items() if t != claim.task_id}
            fields = stored.signal_fields(rest, stored.signal_seq, stored.absorbed)
            written = stored.encode(results={**stored.results, claim.task_id: value}, ready=ready, **fields)
            return Write(written, (signal.payload, ready))

        async with composer.discarded_on_error():
            outcome, old = await self.snapshots.update(claim.instance_id, decide)
        if old is None:  # nothing written: the recorded result, or no signal
            await composer.drop_unused_blobs(None)
            if outcome is None:
                return None
            return await self.blobs.unstash(outcome, f"{claim.instance_id!r} result {claim.task_id!r}")
        payload, ready = outcome
        await self.index.delete_quietly(unreferenced(old, ready, holding))
        return bytes(payload)

    # -- sending -----------------------------------------------------------------------------
    async def send(self, instance_id: str, name: str, payload: bytes) -> Signal:
        """One GET of the snapshot, one create-if-absent PUT (a LIST and another PUT when
        another sender took the number)."""
        instance = layout.encode_id(instance_id)
        stored = await self.snapshots.read_existing(instance_id)
        if stored.terminal:
            raise ConflictError(f"instance {instance_id!r} is {stored.state}; it takes no signals")
        mine = (instance, stored.incarnation)
        with self._lock:
            seq = max(stored.signal_seq, self._issued.get(mine, 0)) + 1
        now = self.clock.now()
        for _ in range(MAX_CAS_ATTEMPTS):
            signal = Signal(instance_id, name, payload, seq, now)
            data = InboxSignal(signal, stored.incarnation, nonce()).to_bytes()
            if await self.store.put_if_absent(layout.inbox_key(instance, seq), data) is not None:
                with self._lock:
                    self._issued[mine] = seq
                    self._issued.move_to_end(mine)
                    while len(self._issued) > _MEMO_SIZE:
                        self._issued.popitem(last=False)
                return signal
            taken = [parsed[1] for parsed in await self._keys(instance)]
            seq = max([seq, *taken]) + 1
        raise StoreUnavailableError(f"signal to {instance_id!r}: too much contention")

    async def _keys(self, instance: str) -> list[tuple[str, int]]:
        found = []
        async for obj in self.store.list(layout.inbox_prefix(instance)):
            parsed = layout.parse_inbox_key(obj.key)
            if parsed is not None:
                found.append((obj.key, parsed[1]))
        return found

    async def _read(self, keys: list[str]) -> list[tuple[str, InboxSignal]]:
        """The inbox objects at ``keys`` that still exist, in key (seq) order; unreadable ones
        are skipped with a warning."""
        keys = sorted(keys)
        objects = await asyncio.gather(*(self.store.get(k) for k in keys))
        items = []
        for key, obj in zip(keys, objects, strict=True):
            if obj is None:
                continue
            try:
                items.append((key, parse_inbox(obj, key)))
            except SerializationError as exc:
                log.warning("skipping unreadable signal: %s", exc)
        return items

    # -- absorbing ---------------------------------------------------------------------------
    async def absorb(self, instance: str, keys: list[str] | None = None, now: datetime | None = None) -> None:
        """Move the inbox objects at ``keys`` (default: LIST the instance's inbox) into the
        snapshot by one compare-and-swap, then delete them (and those of a deleted incarnation).
        A wait they wake is due at ``now`` (default: the clock's): a poll passes its own time,
        so the entry is due for that very poll."""
        if keys is None:
            keys = [key for key, _ in await self._keys(instance)]
        items = await self._read(keys)
        if not items:
            return
        placed: list[str] = []

        async def decide(found: StoredObject | None) -> Decision[tuple[Snapshot, dict[str, str]] | None]:
            stored = self.snapshots.parse(found, instance)
            if stored is None:
                return Keep(None)  # deleted since: its signals went with it
            due = now if now is not None else self.clock.now()
            signals, seq, absorbed = list(stored.signals), stored.signal_seq, list(stored.absorbed)
            for _, item in items:
                if item.nonce in absorbed or item.incarnation != stored.incarnation:
                    continue
                signal = item.signal if item.signal.seq > seq else replace(item.signal, seq=seq + 1)
                seq = signal.seq
                signals.append(signal)
                absorbed.append(item.nonce)
            if seq == stored.signal_seq and len(signals) == len(stored.signals):
                return Keep(None)
            after = replace(stored, signals=tuple(signals))
            ready = dict(stored.ready)
            wait = stored.wait()
            # Paused: the entry stays due never; resuming makes the step due.
            if isinstance(wait, AtSignal) and stored.pause is None and after.pending(wait.signal_name):
                slot = ready.get(wait.step_id)
                if slot is None or slot_due_us(slot) > epoch_us(due):
                    ready[wait.step_id] = await self._due_now(stored, wait.step_id, due, placed)
            fields = stored.signal_fields(tuple(signals), seq, tuple(absorbed[-KEEP_ABSORBED:]))
            return Write(stored.encode(**fields, ready=ready), (stored, ready))

        try:
            written, version = await self.snapshots.swap(instance, decide, what=f"signals of {instance!r}")
        except BaseException:
            await self.index.delete_quietly(placed)
            raise
        if version is not None:
            self.snapshots.forget(layout.snapshot_key(instance))
        stale = [key for key, _ in items]
        if written is not None and version is not None:
            old, ready = written
            used = {layout.ready_key(s, instance, layout.encode_id(t)) for t, s in ready.items()}
            stale += [k for k in placed if k not in used]
            stale += [
                layout.ready_key(s, instance, layout.encode_id(t))
                for t, s in old.ready.items()
                if ready.get(t) != s
            ]
        else:
            stale += placed
        await self.index.delete_quietly(stale)

    async def _due_now(self, stored: Snapshot, step_id: str, now: datetime, placed: list[str]) -> str:
        """An index entry due now for ``step_id``, written before the snapshot that references
        it (leased when the step may be claimed already, as :mod:`.writes` decides)."""
        task = layout.encode_id(step_id)
        instance = layout.encode_id(stored.instance_id)
        for key in placed:
            entry = layout.parse_ready_key(key)
            if entry is not None and entry.priority == stored.priority:
                return entry.slot
        claimed = step_id in stored.ready or step_id in stored.fences
        slot = (ReadyIndex.leased_slot if claimed else ReadyIndex.fresh_slot)(stored.priority, now)
        key = layout.ready_key(slot, instance, task)
        await self.index.put([key])
        placed.append(key)
        return slot

    # -- reading ---------------------------------------------------------------------
    async def pending(self, instance_id: str, name: str | None) -> list[Signal]:
        """The snapshot's buffered signals and the inbox's unabsorbed ones, by seq (one GET, one
        LIST, a GET per unabsorbed signal)."""
        instance = layout.encode_id(instance_id)
        stored, keys = await asyncio.gather(self.snapshots.read(instance), self._keys(instance))
        if stored is None:
            raise NotFoundError(f"no snapshot for instance {instance_id!r}")
        signals = list(stored.signals)
        seq = stored.signal_seq
        for _, item in await self._read([key for key, _ in keys]):
            if item.nonce in stored.absorbed or item.incarnation != stored.incarnation:
                continue
            signal = item.signal if item.signal.seq > seq else replace(item.signal, seq=seq + 1)
            seq = signal.seq
            signals.append(signal)
        return [s for s in signals if name is None or s.name == name]
