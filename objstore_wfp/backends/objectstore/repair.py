"""Mending what crashes between two writes leave behind.

Safe against every concurrent operation, including a delete and re-create of the same id: it
deletes only index entries and blobs that it read as unreferenced *and* older than a grace period
(younger ones may belong to a write in flight), and never a claim object (claims carry the
fencing-token high-water mark; deleting one would let tokens repeat).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from objstore_wfp.backends import layout
from objstore_wfp.backends.objectstore.blobs import blob_keys, epoch_ms
from objstore_wfp.backends.objectstore.ready import ReadyIndex, epoch_us
from objstore_wfp.backends.objectstore.snapshots import Snapshots
from objstore_wfp.errors import SerializationError
from objstore_wfp.stores.base import ConditionalStore


@dataclass
class RepairReport:
    """What :meth:`ObjectStoreBackend.repair` found and mended."""

    instances: int = 0
    entries_created: int = 0
    entries_deleted: int = 0
    orphans_deleted: int = 0
    debris_deleted: int = 0
    unreadable: list[str] = field(default_factory=list)


async def repair(
    store: ConditionalStore, snapshots: Snapshots, index: ReadyIndex, now: datetime, grace: timedelta
) -> RepairReport:
    """Give every ready task of a readable snapshot an index entry (a due leased one, so a
    poll checks its claim); delete index entries of tasks that are not ready and blobs no
    snapshot references, once older than ``grace``; discard the store's debris of interrupted
    writes (temporary files on local disk) older than ``grace``. Reads every snapshot:
    O(instances) requests. Unreadable snapshots are listed, never touched, nor anything of theirs.
    """
    report = RepairReport()
    cutoff_us = epoch_us(now - grace)
    entries: dict[tuple[str, str], list[layout.ReadyEntry]] = defaultdict(list)
    async for obj in store.list(layout.READY):
        entry = layout.parse_ready_key(obj.key)
        if entry is not None:
            entries[(entry.instance, entry.task)].append(entry)
    ready: set[tuple[str, str]] = set()
    blobs_in_use: set[str] = set()
    protected: set[str] = set()
    async for obj in store.list(layout.SNAPSHOTS):
        instance = layout.instance_from_snapshot_key(obj.key)
        if instance is None:
            continue
        try:
            stored = await snapshots.read(instance)
        except SerializationError:
            report.unreadable.append(obj.key)
            protected.add(instance)
            continue
        if stored is None:
            continue
        report.instances += 1
        blobs_in_use.update(blob_keys(stored.doc))
        for task_id in stored.ready:
            task = layout.encode_id(task_id)
            ready.add((instance, task))
            if not entries.get((instance, task)):
                await index.put([layout.ready_key(index.leased_slot(stored.priority, now), instance, task)])
                report.entries_created += 1
    for (instance, task), found in entries.items():
        if (instance, task) in ready or instance in protected:
            continue
        # An entry due "never" was placed by a claim without TTL after its task was ready: for a
        # task no longer ready it is stale whatever its age.
        old = [e.key for e in found if e.due_us < cutoff_us or e.due_us == layout.NEVER_US]
        await index.delete_quietly(old)
        report.entries_deleted += len(old)
    cutoff_ms = epoch_ms(now - grace)
    async for obj in store.list(layout.BLOBS):
        instance, _, rest = obj.key[len(layout.BLOBS) :].partition("/")
        stamp = rest.rpartition("/")[2].split(".", 1)[0]
        old_enough = not stamp.isdigit() or int(stamp) < cutoff_ms
        if obj.key not in blobs_in_use and instance not in protected and old_enough:
            await store.delete(obj.key)
            report.orphans_deleted += 1
    report.debris_deleted = await store.discard_debris(grace.total_seconds())
    return report
