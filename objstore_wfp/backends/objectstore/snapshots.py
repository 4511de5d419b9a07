"""Reading snapshot objects: parse, check they are where they belong, remember the latest copy.

The cache holds the last copy of each recently touched snapshot that this backend read or wrote.
It only ever saves requests: a compare-and-swap made from a stale copy is refused by the store
and retried from a fresh read, and every decision that must be current is taken inside such a
write (see :mod:`.cas`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Literal

from objstore_wfp.backends import layout
from objstore_wfp.backends.objectstore.blobs import Blobs, MissingBlobError
from objstore_wfp.backends.objectstore.cas import UNREAD, Decision, R, _Unread, compare_and_swap
from objstore_wfp.backends.objectstore.documents import Snapshot, check_stash, inline, parse_snapshot
from objstore_wfp.errors import NotFoundError, SerializationError
from objstore_wfp.model import TaskResult, WorkflowSnapshot
from objstore_wfp.model.codec import Reader, b64, snapshot_from_reader
from objstore_wfp.stores.base import ConditionalStore, StoredObject

log = logging.getLogger(__name__)

#: Snapshots remembered per backend (a few KiB each).
CACHE_SIZE = 1024


class Snapshots:
    """Reads snapshots of one store, keeping the latest copy of each in a small LRU cache.
    Safe to share between threads and event loops."""

    def __init__(self, store: ConditionalStore, blobs: Blobs) -> None:
        self.store = store
        self.blobs = blobs
        self._cache: OrderedDict[str, tuple[StoredObject, Snapshot]] = OrderedDict()
        self._lock = threading.Lock()

    # -- cache -------------------------------------------------------------------------------
    def remember(self, found: StoredObject, snapshot: Snapshot) -> None:
        with self._lock:
            self._cache[snapshot.key] = (found, snapshot)
            self._cache.move_to_end(snapshot.key)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)

    def forget(self, key: str) -> None:
        with self._lock:
            self._cache.pop(key, None)

    def cached(self, instance: str) -> Snapshot | None:
        with self._lock:
            entry = self._cache.get(layout.snapshot_key(instance))
        return None if entry is None else entry[1]

    def known(self, instance: str) -> StoredObject | _Unread | None:
        """The cached copy as read, for a compare-and-swap's first attempt (else unread)."""
        with self._lock:
            entry = self._cache.get(layout.snapshot_key(instance))
        return UNREAD if entry is None else entry[0]

    # -- reading -----------------------------------------------------------------------------
    def parse(self, found: StoredObject | None, instance: str, *, tombstone: bool = False) -> Snapshot | None:
        """Parse what a read or a compare-and-swap saw at ``instance``'s key, and remember it.
        A tombstone is an absent instance (``None``), unless ``tombstone`` asks for it."""
        key = layout.snapshot_key(instance)
        if found is None:
            self.forget(key)
            return None
        with self._lock:
            entry = self._cache.get(key)
        if entry is not None and entry[0] is found:
            return entry[1]
        stored = parse_snapshot(found, key)
        if layout.encode_id(stored.instance_id) != instance:
            # A copied or misplaced object: answering with it would act on another instance.
            raise SerializationError(f"{key}: holds the snapshot of instance {stored.instance_id!r}")
        if stored.deleted:
            self.forget(key)
            return stored if tombstone else None
        self.remember(found, stored)
        return stored

    async def read(self, instance: str) -> Snapshot | None:
        return self.parse(await self.store.get(layout.snapshot_key(instance)), instance)

    async def read_existing(self, instance_id: str) -> Snapshot:
        stored = await self.read(layout.encode_id(instance_id))
        if stored is None:
            raise NotFoundError(f"no snapshot for instance {instance_id!r}")
        return stored

    async def reading(self, instance_id: str, use: Callable[[Snapshot], Awaitable[R]]) -> R:
        """``use`` on the current copy of the instance. A blob missing because a delete or a
        replace removed it meanwhile is read again from the copy that replaced it (a
        ``NotFoundError`` if none did); a blob missing from the current copy is damage."""
        stored = await self.read_existing(instance_id)
        while True:
            try:
                return await use(stored)
            except MissingBlobError:
                again = await self.read_existing(instance_id)
                if again.version == stored.version:
                    raise
                stored = again

    async def read_quietly(self, instance: str) -> Snapshot | None:
        try:
            return await self.read(instance)
        except SerializationError as exc:
            log.warning("skipping unreadable snapshot: %s", exc)
            return None

    async def current_or_cached(self, instance: str) -> Snapshot | None:
        return self.cached(instance) or await self.read(instance)

    async def swap(
        self,
        instance: str,
        decide: Callable[[StoredObject | None], Awaitable[Decision[R]]],
        *,
        what: str,
        start: StoredObject | _Unread | Literal["remembered"] | None = "remembered",
    ) -> tuple[R, str | None]:
        """:func:`compare_and_swap` on the instance's snapshot, starting from the remembered
        copy (or from ``start``: ``UNREAD`` reads first, ``None`` assumes no object)."""
        known = self.known(instance) if start == "remembered" else start
        return await compare_and_swap(
            self.store, layout.snapshot_key(instance), decide, known=known, what=what
        )

    async def update(
        self, instance_id: str, decide: Callable[[Snapshot], Awaitable[Decision[R]]]
    ) -> tuple[R, Snapshot | None]:
        """:meth:`swap` on an existing snapshot: ``decide`` gets the parsed copy, and
        ``NotFoundError`` ends it if there is none. Returns ``decide``'s result and the copy the
        write replaced (``None`` if nothing was written)."""
        instance = layout.encode_id(instance_id)
        seen: list[Snapshot] = []

        async def step(found: StoredObject | None) -> Decision[R]:
            stored = self.parse(found, instance)
            if stored is None:
                raise NotFoundError(f"no snapshot for instance {instance_id!r}")
            seen[:] = [stored]
            return await decide(stored)

        result, version = await self.swap(instance, step, what=f"instance {instance_id!r}")
        if version is not None:
            self.forget(layout.snapshot_key(instance))
        return result, (seen[0] if seen and version is not None else None)

    # -- decoding ----------------------------------------------------------------------------
    async def materialize(self, stored: Snapshot) -> WorkflowSnapshot:
        key = stored.key
        doc = dict(stored.doc)
        # Inline values stay as they are (base64, decoded once below); only blob references
        # cost I/O, and only they get a task each: a task per inline result was 40% of a load.
        if doc.get("initial_input") is not None:
            initial = check_stash(doc["initial_input"], "initial_input", key)
            if not isinstance(initial, str):
                doc["initial_input"] = b64(await self.blobs.unstash(initial, f"{key} initial_input"))
        state = dict(Reader(doc, key).obj("state").doc)
        if stored.state == "completed":
            final = check_stash(state.get("final_output"), "state.final_output", key)
            if not isinstance(final, str):
                state["final_output"] = b64(await self.blobs.unstash(final, f"{key} final_output"))
        doc["state"] = state
        blobs = {t: v for t, v in stored.results.items() if not isinstance(v, str)}
        fetched = await asyncio.gather(
            *(self.blobs.unstash(v, f"{key} result {t!r}") for t, v in blobs.items())
        )
        outputs = dict(zip(blobs, fetched, strict=True))
        results = {
            t: TaskResult(t, inline(v, f"{key} result {t!r}") if isinstance(v, str) else outputs[t])
            for t, v in stored.results.items()
        }
        return snapshot_from_reader(Reader(doc, key), results, stored.version)

    async def task_input(self, stored: Snapshot) -> bytes | None:
        """What a ready task of ``stored`` gets: the last completed task's output, else the
        initial input."""
        state = Reader(stored.doc, stored.key).obj("state")
        last = state.opt_text("last_completed_task_id")
        if last is not None and last in stored.results:
            return await self.blobs.unstash(stored.results[last], f"{stored.key} result {last!r}")
        initial = stored.doc.get("initial_input")
        if initial is None:
            return None
        return await self.blobs.unstash(check_stash(initial, "initial_input", stored.key), stored.key)
