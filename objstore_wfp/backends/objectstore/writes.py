"""Composing a snapshot document from a :class:`WorkflowSnapshot` and the stored copy it replaces.

One function serves every write of a whole workflow state (save, create, and a worker's
record-and-advance), so the rules live once: recorded results are kept and first-wins, ready
tasks keep their index entry while they stay ready, a wait's step gets an entry due when it is
(:func:`.documents.wait_due`), a paused instance's new entries are due never (resuming moves
them), the incarnation, fences, a pending cancellation request, the pause request (until the
state is final) and the buffered signals carry over, and large values go to blobs of the
incarnation.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from objstore_wfp.backends import layout
from objstore_wfp.backends.objectstore.blobs import Blobs, blob_keys
from objstore_wfp.backends.objectstore.documents import ClaimRecord, Snapshot, Stash, nonce, same, wait_due
from objstore_wfp.backends.objectstore.ready import ReadyIndex, epoch_us
from objstore_wfp.errors import ConflictError, SerializationError
from objstore_wfp.model import Completed, WorkflowSnapshot
from objstore_wfp.model.codec import dumps, envelope, iso, loads, state_to_json


@dataclass
class Composer:
    """Builds the new document of one instance across compare-and-swap attempts, remembering
    the blobs and index entries it already wrote so a retry does not write them again."""

    blobs: Blobs
    index: ReadyIndex
    instance: str
    stashed: dict[tuple[str, str], Stash] = field(default_factory=dict)
    entries: set[str] = field(default_factory=set)

    async def stash(self, incarnation: str, name: str, data: bytes, now: datetime) -> Stash:
        if (incarnation, name) not in self.stashed:
            self.stashed[(incarnation, name)] = await self.blobs.stash(self.instance, incarnation, data, now)
        return self.stashed[(incarnation, name)]

    async def compose(
        self,
        snapshot: WorkflowSnapshot,
        old: Snapshot | None,
        now: datetime,
        *,
        recording: tuple[str, bytes] | None = None,
        reserve: timedelta | None = None,
        take: int = 1,
    ) -> tuple[bytes, dict[str, str], list[str]]:
        """The document to write over ``old`` (``None``: a new incarnation) with ``recording``
        (a task id and its output) recorded too, the ready map it records, and the tasks reserved
        for the writer: with ``reserve``, the first ``take`` tasks the write makes ready get a
        leased entry due after ``reserve``, so no poll offers them while the writer claims them.
        Writes the blobs and the index entries the document needs first. Raises
        ``ConflictError`` when ``snapshot`` offers a result that contradicts a recorded one."""
        incarnation = old.incarnation if old is not None else nonce()
        results: dict[str, Stash] = dict(old.results) if old is not None else {}
        # A final state carries no completed tasks: the output being recorded comes separately.
        offered = {t: r.output for t, r in snapshot.completed_tasks.items()}
        if recording is not None:
            offered.setdefault(*recording)
        for task_id, output in offered.items():
            if task_id in results:
                if not same(results[task_id], output):
                    raise ConflictError(
                        f"task {task_id!r} of {snapshot.instance_id!r} already has another output"
                    )
                continue
            results[task_id] = await self.stash(incarnation, f"result {task_id}", output, now)
        initial: Stash | None = None
        if snapshot.initial_input is not None:
            kept = old.doc.get("initial_input") if old is not None else None
            if kept is not None and not isinstance(kept, (str, dict)):
                kept = None
            if kept is not None and same(kept, snapshot.initial_input):
                initial = kept
            else:
                initial = await self.stash(incarnation, "initial", snapshot.initial_input, now)
        state = state_to_json(snapshot.state)
        if isinstance(snapshot.state, Completed):
            state["final_output"] = await self.stash(incarnation, "final", snapshot.state.final_output, now)

        ready: dict[str, str] = {}
        reserved: list[str] = []
        paused = old is not None and old.pause is not None
        for task_id in snapshot.available_task_ids():
            if task_id in results:
                continue
            was_ready = old is not None and task_id in old.ready
            if old is not None and was_ready and old.priority == snapshot.priority:
                ready[task_id] = old.ready[task_id]
            elif paused:
                ready[task_id] = ReadyIndex.leased_slot(snapshot.priority, None)
            elif reserve is not None and len(reserved) < take:
                reserved.append(task_id)
                ready[task_id] = ReadyIndex.leased_slot(snapshot.priority, now + reserve)
            elif was_ready or (old is not None and task_id in old.fences):
                # It may be claimed already (a claim moves only the entry it knows; an early
                # claim published a fence): polls must check the claim.
                ready[task_id] = ReadyIndex.leased_slot(snapshot.priority, now)
            else:
                ready[task_id] = ReadyIndex.fresh_slot(snapshot.priority, now)
        wait = snapshot.waiting_on()
        if wait is not None and wait.step_id not in results:
            # A wait's step is offered once due: its entry is due then (none while it waits for
            # a signal without timeout). An unchanged wait keeps the entry it has.
            step = wait.step_id
            unchanged = old is not None and old.wait() == wait and old.priority == snapshot.priority
            if unchanged and old is not None and step in old.ready:
                ready[step] = old.ready[step]
            else:
                due = old.wait_due(wait, now) if old is not None else wait_due(wait, False, now)
                if due is not None and paused:
                    ready[step] = ReadyIndex.leased_slot(snapshot.priority, None)
                elif due is not None:
                    claimed = old is not None and (step in old.ready or step in old.fences)
                    kind = layout.LEASED if claimed else layout.FRESH
                    ready[step] = layout.ready_slot(snapshot.priority, epoch_us(due), kind, nonce())
        created = [
            layout.ready_key(slot, self.instance, layout.encode_id(t))
            for t, slot in ready.items()
            if not (old is not None and old.ready.get(t) == slot)
        ]
        new = [k for k in created if k not in self.entries]
        self.entries.update(new)
        await self.index.put(new)

        doc = envelope(
            "snapshot",
            {
                "instance_id": snapshot.instance_id,
                "incarnation": incarnation,
                "definition_hash": snapshot.definition_hash,
                "priority": snapshot.priority,
                "created_at": iso(snapshot.created_at),
                "updated_at": iso(snapshot.updated_at),
                "initial_input": initial,
                "state": state,
                "results": results,
                "ready": ready,
                "fences": _fences(old, ready, results),
                "cancel": old.cancel if old is not None else None,
                "pause": old.pause if old is not None and not snapshot.is_terminal else None,
                **(old.signal_fields(old.signals, old.signal_seq, old.absorbed) if old is not None else {}),
                "w": nonce(),
            },
        )
        return dumps(doc), ready, reserved

    @contextlib.asynccontextmanager
    async def discarded_on_error(self) -> AsyncIterator[None]:
        """On any error (the write refused, or the caller cancelled), delete the entries and
        blobs this composer wrote that the stored document does not reference. It may reference
        them: a store can report a conditional write lost that landed (the S3 adapter does when
        its write was replaced before it could check), and the copy that replaced it keeps them.
        """
        try:
            yield
        except BaseException:
            stored = await self._stored_doc()
            kept = _ready_keys(stored.get("ready"), self.instance) if stored is not None else set()
            await self.index.delete_quietly(k for k in self.entries if k not in kept)
            await self.drop_unused_blobs(stored)
            raise

    async def _stored_doc(self) -> dict[str, Any] | None:
        """The instance's stored document as JSON; ``None`` if absent or unreadable."""
        found = await self.blobs.store.get(layout.snapshot_key(self.instance))
        try:
            doc = loads(found.data, "snapshot") if found is not None else None
        except SerializationError:
            return None
        return doc if isinstance(doc, dict) else None

    def leftovers(self, final_ready: dict[str, str]) -> list[str]:
        """Entries this composer wrote that the written document does not reference."""
        used = _ready_keys(final_ready, self.instance)
        return [k for k in self.entries if k not in used]

    async def drop_unused_blobs(self, written: dict[str, Any] | None) -> None:
        """Delete the blobs this composer wrote that ``written`` (the document that was stored,
        ``None`` if none was) does not reference: nobody else can reference them."""
        used = set(blob_keys(written)) if written is not None else set()
        for value in self.stashed.values():
            if isinstance(value, dict) and value["blob"] not in used:
                await self.blobs.drop(value)


def _ready_keys(ready: object, instance: str) -> set[str]:
    """The index entries a document's ``ready`` map references."""
    if not isinstance(ready, dict):
        return set()
    return {
        layout.ready_key(slot, instance, layout.encode_id(task_id))
        for task_id, slot in ready.items()
        if isinstance(task_id, str) and isinstance(slot, str)
    }


def _fences(old: Snapshot | None, ready: dict[str, str], results: dict[str, Stash]) -> dict[str, int]:
    """``old``'s fences, plus a fence of 0 (refusing no token) for each task that leaves the
    ready set unfinished: it may be claimed, so when it is ready again its entry must be one
    that polls check against the claim, not a fresh one (see :meth:`Composer.compose`)."""
    if old is None:
        return {}
    fences = dict(old.fences)
    for task_id in old.ready:
        if task_id not in ready and task_id not in results:
            fences.setdefault(task_id, 0)
    return fences


def unreferenced(old: Snapshot, ready: dict[str, str], holding: ClaimRecord | None) -> list[str]:
    """Keys of the entries ``old`` references that ``ready`` no longer does, less the fresh
    entry of the task ``holding`` claimed: its claim moved that one out already."""
    instance = layout.encode_id(old.instance_id)
    return [
        layout.ready_key(slot, instance, layout.encode_id(t))
        for t, slot in old.ready.items()
        if ready.get(t) != slot
        and not (
            holding is not None
            and holding.entry
            and t == holding.task_id
            and layout.slot_kind(slot) == layout.FRESH
        )
    ]
