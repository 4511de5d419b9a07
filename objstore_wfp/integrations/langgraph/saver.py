"""A LangGraph checkpoint saver on local disk, memory, S3, GCS and Azure that never loses an update.

Log-structured: every checkpoint and every pending write is an immutable object written
create-if-absent; one small head per (thread, namespace) names the latest checkpoint (inline)
and is advanced by compare-and-swap. See :mod:`._format` for the key layout and docs/langgraph.md
for the guide.

Concurrency rule: ``put`` advances the head only from the checkpoint it was computed from (the
``checkpoint_id`` in its config, LangGraph's parent). When another writer got there first, the
put raises :class:`CheckpointConflictError` and writes nothing visible; LangGraph's ``invoke``
raises it to the caller, who retries (the retry reads the new latest checkpoint). Resuming from
an older checkpoint on purpose (time travel) is a fork: say so with ``FORK: True`` in the config's
``configurable``.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextlib
import functools
import operator
import secrets
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import Any, TypeVar, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    get_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from objstore_wfp.errors import ConflictError, InvalidArgumentError, UnsupportedStoreError
from objstore_wfp.integrations.langgraph._format import (
    DELETED,
    HEADS,
    LIVE,
    CheckpointRecord,
    Head,
    Slot,
    WriteRecord,
    checkpoint_number,
    log_key_number,
    retarget,
    thread_heads_prefix,
)
from objstore_wfp.stores.base import ConditionalStore
from objstore_wfp.stores.urls import open_store

T = TypeVar("T")

#: ``configurable`` key that lets a ``put`` start from a checkpoint other than the latest (a fork).
FORK = "objstore_wfp_fork"

#: Objects fetched or deleted concurrently by one call.
_BATCH = 16
#: Compare-and-swap attempts of one ``put`` while the head keeps naming its parent.
_PUT_ATTEMPTS = 5


class CheckpointConflictError(ConflictError):
    """A ``put`` lost: the thread's latest checkpoint is no longer the one it was computed from.

    Attributes: ``thread_id``, ``checkpoint_ns``, ``expected`` (the parent the put was computed
    from, ``None`` for a new thread) and ``found`` (the latest checkpoint id now, ``None`` if
    the thread has none). Nothing the losing put wrote is visible; run the step again from the
    latest checkpoint (for a graph: ``invoke`` again).
    """

    def __init__(self, thread_id: str, checkpoint_ns: str, expected: str | None, found: str | None, why: str):
        self.thread_id = thread_id
        self.checkpoint_ns = checkpoint_ns
        self.expected = expected
        self.found = found
        super().__init__(
            f"thread {thread_id!r} (namespace {checkpoint_ns!r}): {why}; the put was computed from "
            f"checkpoint {expected!r} but the latest is {found!r}. Nothing was written: retry from "
            "the latest checkpoint"
        )


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _configurable(config: RunnableConfig | None) -> dict[str, Any]:
    if not isinstance(config, dict) or not isinstance(config.get("configurable"), dict):
        raise InvalidArgumentError("config must be a dict with a 'configurable' dict")
    return config["configurable"]


def _slot(config: RunnableConfig) -> Slot:
    conf = _configurable(config)
    thread_id = conf.get("thread_id")
    if thread_id is None or thread_id == "":
        raise InvalidArgumentError("config['configurable'] must name a 'thread_id'")
    ns = conf.get("checkpoint_ns") or ""
    if not isinstance(ns, str):
        raise InvalidArgumentError(f"checkpoint_ns must be a str, got {type(ns).__name__}")
    return Slot(str(thread_id), ns)


def _target_config(slot: Slot, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {
            "thread_id": slot.thread_id,
            "checkpoint_ns": slot.checkpoint_ns,
            "checkpoint_id": checkpoint_id,
        }
    }


class ObjectStoreSaver(BaseCheckpointSaver[int]):
    """LangGraph's ``BaseCheckpointSaver`` over a :class:`ConditionalStore`.

    Costs in store requests, independent of the thread's history: ``put`` 2 (3 when this saver
    has not read the thread's head yet); ``get_tuple`` of the latest checkpoint 1 GET plus 1 LIST
    and 1 GET per pending write; ``list(limit=k)`` 1 GET, 1 LIST and per checkpoint returned
    1 GET plus its writes; ``put_writes`` 1 per write, in parallel.

    Store I/O runs on the saver's own event-loop thread, so the sync and the async methods may be
    mixed and called from any thread or loop. Close the saver (``close``/``aclose`` or a ``with``
    block) to stop that thread and release the store's connections.

    Errors: :class:`CheckpointConflictError` (a lost ``put``), :class:`InvalidArgumentError`
    (a config without ``thread_id``, a checkpoint id that is not a UUID, an unknown prune
    strategy), :class:`~objstore_wfp.errors.SerializationError` (an unreadable stored object),
    :class:`~objstore_wfp.errors.StoreUnavailableError` (the store kept failing).
    """

    def __init__(
        self,
        store: ConditionalStore,
        *,
        serde: SerializerProtocol | None = None,
        verify_conditional_writes: bool = True,
    ) -> None:
        """``store``: where everything goes (under ``langgraph/``); ``serde``: LangGraph's
        serializer (default ``JsonPlusSerializer``). The store is probed once, before the first
        operation, and refused with :class:`UnsupportedStoreError` if it ignores conditional
        writes, unless ``verify_conditional_writes=False``."""
        super().__init__(serde=serde)
        self.store = store
        self._verified = not verify_conditional_writes
        self._heads: dict[Slot, Head] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="objstore-langgraph", daemon=True)
        self._thread.start()
        self._closed = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        serde: SerializerProtocol | None = None,
        verify_conditional_writes: bool = True,
        **storage_options: Any,
    ) -> ObjectStoreSaver:
        """A saver on ``url``: a path, ``file://``, ``memory://``, ``s3://bucket/prefix``,
        ``gs://bucket/prefix`` or ``az://container/prefix``; ``storage_options`` go to fsspec."""
        return cls(
            open_store(url, **storage_options),
            serde=serde,
            verify_conditional_writes=verify_conditional_writes,
        )

    # -- the loop thread -------------------------------------------------------------------------
    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        if self._closed:
            coro.close()
            raise RuntimeError("this ObjectStoreSaver is closed")
        return asyncio.run_coroutine_threadsafe(self._verified_first(coro), self._loop)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._submit(coro).result()

    async def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(self._submit(coro))

    async def _verified_first(self, coro: Coroutine[Any, Any, T]) -> T:
        if not self._verified:
            from objstore_wfp.stores.probe import probe_store

            try:
                await probe_store(self.store)
            except BaseException:
                coro.close()
                raise
            self._verified = True
        return await coro

    def close(self) -> None:
        """Release the store and stop the loop thread; idempotent."""
        if self._closed:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.store.close(), self._loop).result()
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    async def aclose(self) -> None:
        """:meth:`close` without blocking the caller's event loop."""
        await asyncio.to_thread(self.close)

    def __enter__(self) -> ObjectStoreSaver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> ObjectStoreSaver:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- reading ---------------------------------------------------------------------------------
    async def _read_head(self, slot: Slot) -> Head | None:
        found = await self.store.get(slot.head_key)
        if found is None:
            self._heads.pop(slot, None)
            return None
        head = Head.decode(found.data, found.version, slot.head_key)
        self._heads[slot] = head
        return head

    async def _get_many(self, keys: Sequence[str]) -> list[tuple[str, bytes]]:
        """The objects at ``keys`` that still exist, in order."""
        found = await asyncio.gather(*(self.store.get(k) for k in keys))
        return [(k, f.data) for k, f in zip(keys, found, strict=True) if f is not None]

    async def _keys(self, prefix: str, start_after: str | None = None) -> list[str]:
        return [o.key async for o in self.store.list(prefix, start_after=start_after)]

    async def _writes(self, slot: Slot, checkpoint_id: str) -> list[PendingWrite]:
        records = [
            WriteRecord.decode(d, k)
            for k, d in await self._get_many(await self._keys(slot.writes_prefix(checkpoint_id)))
        ]
        records.sort(key=lambda w: writes_sort_key(w.task_path, w.task_id, w.idx))
        return [(w.task_id, w.channel, self.serde.loads_typed(w.value)) for w in records]

    def _tuple(
        self, record: CheckpointRecord, metadata: CheckpointMetadata, writes: list[PendingWrite]
    ) -> CheckpointTuple:
        slot = record.slot
        return CheckpointTuple(
            config=_target_config(slot, record.checkpoint_id),
            checkpoint=self.serde.loads_typed(record.checkpoint),
            metadata=metadata,
            parent_config=None if record.parent_id is None else _target_config(slot, record.parent_id),
            pending_writes=writes,
        )

    async def _committed(self, head: Head, checkpoint_id: str) -> CheckpointRecord | None:
        """The checkpoint ``checkpoint_id`` of ``head``'s thread if it is committed (the head or
        older: a newer one is a put still in flight, or the leftover of a writer that died)."""
        if checkpoint_id == head.checkpoint_id:
            return head.latest
        number = checkpoint_number(checkpoint_id)
        if number > checkpoint_number(head.checkpoint_id):
            return None
        found = await self.store.get(head.slot.checkpoint_key_at(number))
        if found is None:
            return None
        return CheckpointRecord.decode(found.data, head.slot.checkpoint_key_at(number))

    async def _get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        slot = _slot(config)
        wanted = _configurable(config).get("checkpoint_id")
        head = await self._read_head(slot)
        if head is None or not head.live:
            return None
        record = await self._committed(head, wanted or head.checkpoint_id)
        if record is None:
            return None
        writes = await self._writes(slot, record.checkpoint_id)
        return self._tuple(record, self.serde.loads_typed(record.metadata), writes)

    async def _heads_at(self, keys: Sequence[str]) -> list[Head]:
        found = await asyncio.gather(*(self.store.get(k) for k in keys))
        return [Head.decode(f.data, f.version, k) for k, f in zip(keys, found, strict=True) if f is not None]

    async def _list_heads(self, config: RunnableConfig | None) -> list[Head]:
        """The live heads ``config`` covers: its namespace if it names one, else every namespace
        of its thread; every head of the store for ``None``."""
        if config is not None:
            slot = _slot(config)
            if _configurable(config).get("checkpoint_ns") is not None:
                head = await self._read_head(slot)
                return [head] if head is not None and head.live else []
            prefix = thread_heads_prefix(slot.thread_id)
        else:
            prefix = HEADS
        return [h for h in await self._heads_at(await self._keys(prefix)) if h.live]

    async def _list_chunks(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> AsyncGenerator[list[CheckpointTuple], None]:
        remaining = limit
        wanted = _configurable(config).get("checkpoint_id") if config is not None else None
        before_id = _configurable(before).get("checkpoint_id") if before is not None else None
        before_number = checkpoint_number(before_id) if before_id else None

        def select(records: list[CheckpointRecord]) -> list[tuple[CheckpointRecord, CheckpointMetadata]]:
            nonlocal remaining
            chosen = []
            for record in records:
                if remaining == 0:
                    break
                if before_number is not None and checkpoint_number(record.checkpoint_id) >= before_number:
                    continue
                metadata: CheckpointMetadata = self.serde.loads_typed(record.metadata)
                found = cast(dict[str, Any], metadata)
                if filter and not all(k in found and found[k] == v for k, v in filter.items()):
                    continue
                chosen.append((record, metadata))
                if remaining is not None:
                    remaining -= 1
            return chosen

        async def tuples(chosen: list[tuple[CheckpointRecord, CheckpointMetadata]]) -> list[CheckpointTuple]:
            writes = await asyncio.gather(*(self._writes(r.slot, r.checkpoint_id) for r, _ in chosen))
            return [self._tuple(r, m, w) for (r, m), w in zip(chosen, writes, strict=True)]

        if remaining is not None and remaining <= 0:
            return
        for head in await self._list_heads(config):
            slot = head.slot
            if wanted:
                record = await self._committed(head, wanted)
                if chosen := select([record] if record is not None else []):
                    yield await tuples(chosen)
                continue
            # Inverted ids: from the head's key on (committed, older) and after ``before``'s.
            start = checkpoint_number(head.checkpoint_id) + 1
            if before_number is not None:
                start = min(start, before_number)
            listing = aiter(
                self.store.list(slot.checkpoints_prefix, start_after=slot.checkpoint_key_at(start))
            )
            exhausted = False
            while not exhausted and remaining != 0:
                # Without a filter a limited list reads no more checkpoints than it returns.
                size = _BATCH if filter or remaining is None else min(_BATCH, remaining)
                keys: list[str] = []
                async for listed in listing:
                    keys.append(listed.key)
                    if len(keys) == size:
                        break
                else:
                    exhausted = True
                records = [CheckpointRecord.decode(d, k) for k, d in await self._get_many(keys)]
                if chosen := select(records):
                    yield await tuples(chosen)
            if remaining == 0:
                return

    # -- writing ---------------------------------------------------------------------------------
    def _check_parent(
        self, slot: Slot, head: Head | None, parent: str | None, number: int, free: bool
    ) -> None:
        """Raise :class:`CheckpointConflictError` unless a put computed from ``parent`` may
        replace ``head``: it must name the head, unless the put is ``free`` (a fork, or a new root
        that is not a graph run's first checkpoint)."""
        if head is not None and not head.live:
            if number <= checkpoint_number(head.checkpoint_id):
                raise CheckpointConflictError(
                    slot.thread_id,
                    slot.checkpoint_ns,
                    parent,
                    None,
                    f"the thread was deleted (checkpoints up to {head.checkpoint_id} are being removed)",
                )
            head = None
        found = None if head is None else head.checkpoint_id
        if found != parent and not free:
            why = "the thread has no checkpoint" if found is None else "another writer advanced the thread"
            raise CheckpointConflictError(slot.thread_id, slot.checkpoint_ns, parent, found, why)

    async def _put(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata
    ) -> RunnableConfig:
        slot = _slot(config)
        conf = _configurable(config)
        parent: str | None = conf.get("checkpoint_id") or None
        # LangGraph numbers a run's first checkpoint on a thread it found empty step -1: such a
        # put creates the thread, so it must find it empty. Any other put without a parent (an
        # import, a test) adds a new root, as LangGraph's own savers allow.
        free = bool(conf.get(FORK)) or (parent is None and metadata.get("step") != -1)
        checkpoint_id = checkpoint["id"]
        number = checkpoint_number(checkpoint_id)
        # Channels without a version are not part of the state (LangGraph's own savers agree).
        versions = checkpoint["channel_versions"]
        stored = {
            **checkpoint,
            "channel_values": {k: v for k, v in checkpoint["channel_values"].items() if k in versions},
        }
        meta_config: RunnableConfig = {**config, "configurable": {k: v for k, v in conf.items() if k != FORK}}
        record = CheckpointRecord(
            slot,
            checkpoint_id,
            parent,
            self.serde.dumps_typed(stored),
            self.serde.dumps_typed(get_checkpoint_metadata(meta_config, metadata)),
            secrets.token_hex(8),
        )
        result = _target_config(slot, checkpoint_id)
        head = self._heads.get(slot)
        if head is None or not head.live or head.checkpoint_id != parent:
            head = await self._read_head(slot)
        log_key = slot.checkpoint_key_at(number)
        # Whether this call created the checkpoint object: only then may a lost put remove it.
        logged = created = False
        for _ in range(_PUT_ATTEMPTS):
            if head is not None and head.live and checkpoint_id in (head.checkpoint_id, head.latest_parent):
                # This put already landed: a retried call, or a compare-and-swap that applied
                # though its answer was lost, and another writer has built on it since.
                return result
            try:
                self._check_parent(slot, head, parent, number, free)
            except CheckpointConflictError:
                if created:
                    await self.store.delete(log_key)
                raise
            if not logged:
                created = await self.store.put_if_absent(log_key, record.encode()) is not None
                logged = True
            new = Head(slot, LIVE, checkpoint_id, record, _now(), secrets.token_hex(8))
            if head is None:
                version = await self.store.put_if_absent(slot.head_key, new.encode())
            else:
                version = await self.store.put_if_version(slot.head_key, new.encode(), head.version)
            if version is not None:
                self._heads[slot] = replace(new, version=version)
                return result
            head = await self._read_head(slot)
        if created:
            await self.store.delete(log_key)
        raise CheckpointConflictError(
            slot.thread_id,
            slot.checkpoint_ns,
            parent,
            None if head is None else head.checkpoint_id,
            "the head kept changing",
        )

    async def _put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str
    ) -> None:
        slot = _slot(config)
        checkpoint_id = _configurable(config).get("checkpoint_id")
        if not checkpoint_id:
            raise InvalidArgumentError("put_writes needs config['configurable']['checkpoint_id']")
        calls = []
        for position, (channel, value) in enumerate(writes):
            idx = WRITES_IDX_MAP.get(channel, position)
            data = WriteRecord(str(task_id), task_path, idx, channel, self.serde.dumps_typed(value)).encode(
                slot, checkpoint_id
            )
            key = slot.write_key(checkpoint_id, str(task_id), idx)
            # A task's regular writes are first-wins (a re-run task repeats them); its special
            # writes (error, interrupt, resume...) replace the previous one, as in LangGraph.
            calls.append(self.store.put_if_absent(key, data) if idx >= 0 else self.store.put(key, data))
        await asyncio.gather(*calls)

    # -- deleting --------------------------------------------------------------------------------
    async def _delete_keys(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), _BATCH):
            await asyncio.gather(*(self.store.delete(k) for k in keys[start : start + _BATCH]))

    async def _purge(self, slot: Slot, keep: Callable[[int], bool]) -> None:
        """Delete the log objects of ``slot`` whose checkpoint number ``keep`` rejects."""
        doomed = []
        for key in await self._keys(slot.log_prefix):
            number = log_key_number(slot, key)
            if number is not None and not keep(number):
                doomed.append(key)
        await self._delete_keys(doomed)

    async def _tombstone(self, head: Head, *, retry: bool) -> Head | None:
        """Flip ``head`` to a tombstone by compare-and-swap (re-reading and retrying while
        ``retry``); the tombstone, or ``None`` if there was nothing (or, without ``retry``, the
        head moved)."""
        current: Head | None = head
        while current is not None:
            if not current.live:
                return current
            dead = Head(current.slot, DELETED, current.checkpoint_id, None, _now(), secrets.token_hex(8))
            version = await self.store.put_if_version(current.slot.head_key, dead.encode(), current.version)
            if version is not None:
                self._heads.pop(current.slot, None)
                return replace(dead, version=version)
            if not retry:
                return None
            current = await self._read_head(current.slot)
        return None

    async def _finish_delete(self, tombstone: Head) -> None:
        """Remove what the tombstone covers, then the tombstone itself where the store can do so
        without racing a new first checkpoint (elsewhere the tombstone stays: it reads as absent)."""
        last = checkpoint_number(tombstone.checkpoint_id)
        await self._purge(tombstone.slot, lambda n: n > last)
        if self.store.supports_conditional_delete:
            # An adapter may learn only now that it cannot: then the tombstone stays, correctly.
            with contextlib.suppress(UnsupportedStoreError):
                await self.store.delete_if_version(tombstone.slot.head_key, tombstone.version)

    async def _delete_thread(self, thread_id: str) -> None:
        for head in await self._heads_at(await self._keys(thread_heads_prefix(str(thread_id)))):
            tombstone = await self._tombstone(head, retry=True)
            if tombstone is not None:
                await self._finish_delete(tombstone)

    async def _prune(self, thread_ids: Sequence[str], strategy: str) -> None:
        if strategy not in ("keep_latest", "delete"):
            raise InvalidArgumentError(f"prune strategy must be 'keep_latest' or 'delete', got {strategy!r}")
        for thread_id in thread_ids:
            if strategy == "delete":
                await self._delete_thread(thread_id)
                continue
            for head in await self._list_heads({"configurable": {"thread_id": thread_id}}):
                kept = checkpoint_number(head.checkpoint_id)
                # Newer than the head means a put in flight: never touched.
                await self._purge(head.slot, functools.partial(operator.le, kept))  # kept <= n

    async def _delete_for_runs(self, run_ids: Sequence[str]) -> None:
        doomed_runs = set(run_ids)
        if not doomed_runs:
            return
        for head in await self._list_heads(None):
            slot = head.slot
            start = slot.checkpoint_key_at(checkpoint_number(head.checkpoint_id) + 1)
            keys = await self._keys(slot.checkpoints_prefix, start)
            survivors: list[CheckpointRecord] = []
            doomed: list[str] = []
            for start_at in range(0, len(keys), _BATCH):
                for key, data in await self._get_many(keys[start_at : start_at + _BATCH]):
                    record = CheckpointRecord.decode(data, key)
                    if self.serde.loads_typed(record.metadata).get("run_id") in doomed_runs:
                        doomed.append(record.checkpoint_id)
                    else:
                        survivors.append(record)
            if not doomed:
                continue
            if head.checkpoint_id in doomed:
                # Move the head first, so no reader sees it name a deleted checkpoint.
                newest = survivors[0] if survivors else None
                if newest is None:
                    if await self._tombstone(head, retry=False) is None:
                        continue  # a writer moved the thread on meanwhile: leave it
                else:
                    moved = Head(slot, LIVE, newest.checkpoint_id, newest, _now(), secrets.token_hex(8))
                    if await self.store.put_if_version(slot.head_key, moved.encode(), head.version) is None:
                        continue
                    self._heads.pop(slot, None)
            for checkpoint_id in doomed:
                await self._delete_keys(
                    [slot.checkpoint_key(checkpoint_id), *await self._keys(slot.writes_prefix(checkpoint_id))]
                )

    async def _copy_thread(self, source: str, target: str) -> None:
        for head in await self._list_heads({"configurable": {"thread_id": source}}):
            src = head.slot
            dst = Slot(str(target), src.checkpoint_ns)
            existing = await self._read_head(dst)
            last = checkpoint_number(head.checkpoint_id)
            if existing is not None and (existing.live or checkpoint_number(existing.checkpoint_id) >= last):
                raise ConflictError(
                    f"copy_thread: target thread {target!r} (namespace {src.checkpoint_ns!r}) already exists"
                )
            keys = [k for k in await self._keys(src.log_prefix) if _at_most(log_key_number(src, k), last)]
            for start in range(0, len(keys), _BATCH):
                found = await self._get_many(keys[start : start + _BATCH])
                await asyncio.gather(
                    *(
                        self.store.put_if_absent(
                            dst.log_prefix + k[len(src.log_prefix) :], retarget(d, k, dst.thread_id)
                        )
                        for k, d in found
                    )
                )
            assert head.latest is not None
            latest = replace(head.latest, slot=dst)
            new = Head(dst, LIVE, head.checkpoint_id, latest, _now(), secrets.token_hex(8))
            if existing is None:
                version = await self.store.put_if_absent(dst.head_key, new.encode())
            else:
                version = await self.store.put_if_version(dst.head_key, new.encode(), existing.version)
            if version is None:
                raise ConflictError(
                    f"copy_thread: target thread {target!r} was written while it was being copied"
                )

    async def _expire(self, older_than: timedelta, now: datetime | None) -> list[str]:
        if older_than < timedelta(0):
            raise InvalidArgumentError(f"older_than must not be negative, got {older_than}")
        cutoff = (now or _now()) - older_than
        by_thread: dict[str, list[Head]] = {}
        for head in await self._heads_at(await self._keys(HEADS)):
            by_thread.setdefault(head.slot.thread_id, []).append(head)
        expired = []
        for thread_id, heads in sorted(by_thread.items()):
            live = [h for h in heads if h.live]
            if live and any(h.updated_at > cutoff for h in live):
                continue
            # The root namespace last: while it stands, the thread reads as existing.
            tombstones = [h for h in heads if not h.live]
            for head in sorted(live, key=lambda h: h.slot.checkpoint_ns == ""):
                tombstone = await self._tombstone(head, retry=False)
                if tombstone is None:
                    break  # written to since the scan: still in use
                tombstones.append(tombstone)
            else:
                if live:
                    expired.append(thread_id)
            for tombstone in tombstones:
                await self._finish_delete(tombstone)
        return expired

    # -- BaseCheckpointSaver, async ----------------------------------------------------------------
    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names (its ``checkpoint_id``), or the latest of its thread
        and namespace; ``None`` if there is none. Pending writes come in ``writes_sort_key`` order."""
        return await self._call(self._get_tuple(config))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Checkpoints newest first, per namespace: of ``config``'s thread (one namespace if the
        config names ``checkpoint_ns``) or of every thread (``config=None``); only those whose
        metadata has every ``filter`` item, older than ``before``'s checkpoint, at most ``limit``."""
        chunks = self._list_chunks(config, filter, before, limit)
        try:
            while (chunk := await self._call(_next_chunk(chunks))) is not None:
                for item in chunk:
                    yield item
        finally:
            if not self._closed:
                await self._call(chunks.aclose())

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store ``checkpoint`` as the latest of its thread and namespace, computed from the
        checkpoint ``config`` names (none for a new thread). Returns the config of the stored
        checkpoint. Raises :class:`CheckpointConflictError` if that is no longer the latest."""
        return await self._call(self._put(config, checkpoint, metadata))

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store one task's pending writes on the checkpoint ``config`` names; each write is its
        own create-if-absent object, so different tasks never drop each other's writes."""
        await self._call(self._put_writes(config, writes, task_id, task_path))

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint and write of the thread, in every namespace. Each head is
        first flipped to a tombstone, so readers see the whole thread or nothing."""
        await self._call(self._delete_thread(thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) whose metadata ``run_id`` is in ``run_ids``,
        in every thread; a head naming one moves to the newest survivor. Reads every checkpoint."""
        await self._call(self._delete_for_runs(run_ids))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and write of one thread to a new thread (same checkpoint ids).
        Raises :class:`ConflictError` if the target thread exists."""
        await self._call(self._copy_thread(source_thread_id, target_thread_id))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``"keep_latest"``: keep each namespace's latest checkpoint (and its writes), delete the
        older ones; ``"delete"``: delete the threads. A graph using ``DeltaChannel`` needs the
        history ``keep_latest`` drops: do not prune such threads."""
        await self._call(self._prune(thread_ids, strategy))

    async def aexpire_threads(self, older_than: timedelta, *, now: datetime | None = None) -> list[str]:
        """Delete every thread none of whose namespaces was written for ``older_than``; return
        their ids. A thread written to during the sweep is kept. Also finishes deletions a
        crashed caller left behind (tombstones). Reads every head."""
        return await self._call(self._expire(older_than, now))

    # -- BaseCheckpointSaver, sync -----------------------------------------------------------------
    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Blocking :meth:`aget_tuple`."""
        return self._run(self._get_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Blocking :meth:`alist`."""
        chunks = self._list_chunks(config, filter, before, limit)
        try:
            while (chunk := self._run(_next_chunk(chunks))) is not None:
                yield from chunk
        finally:
            if not self._closed:
                self._run(chunks.aclose())

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Blocking :meth:`aput`."""
        return self._run(self._put(config, checkpoint, metadata))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Blocking :meth:`aput_writes`."""
        self._run(self._put_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        """Blocking :meth:`adelete_thread`."""
        self._run(self._delete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Blocking :meth:`adelete_for_runs`."""
        self._run(self._delete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Blocking :meth:`acopy_thread`."""
        self._run(self._copy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Blocking :meth:`aprune`."""
        self._run(self._prune(thread_ids, strategy))

    def expire_threads(self, older_than: timedelta, *, now: datetime | None = None) -> builtins.list[str]:
        """Blocking :meth:`aexpire_threads`."""
        return self._run(self._expire(older_than, now))


def _at_most(number: int | None, last: int) -> bool:
    """Whether a log key's checkpoint number is known and at most ``last``."""
    return number is not None and number <= last


async def _next_chunk(chunks: AsyncGenerator[list[CheckpointTuple], None]) -> list[CheckpointTuple] | None:
    try:
        return await chunks.__anext__()
    except StopAsyncIteration:
        return None


__all__ = ["FORK", "CheckpointConflictError", "ObjectStoreSaver"]
