"""Cancellation and pause: requests on a whole instance, kept in its snapshot document.

Each is one compare-and-swap of the snapshot (:meth:`.snapshots.Snapshots.update`), so a request
and the workflow's progress never overwrite each other. Index entries move around the write by
the rule every write follows (:mod:`.writes`): new entries before it, stale ones after.
"""

from __future__ import annotations

import contextlib
from datetime import datetime

from objstore_wfp.backends import layout
from objstore_wfp.backends.objectstore.blobs import Blobs
from objstore_wfp.backends.objectstore.cas import Decision, Keep, Write
from objstore_wfp.backends.objectstore.documents import Snapshot, cancel_to_json
from objstore_wfp.backends.objectstore.ready import ReadyIndex
from objstore_wfp.backends.objectstore.snapshots import Snapshots
from objstore_wfp.backends.objectstore.writes import Composer, unreferenced
from objstore_wfp.clock import Clock
from objstore_wfp.errors import CannotCancelError, CannotPauseError, NotFoundError
from objstore_wfp.model import CancellationRequest, Cancelled, PauseRequest
from objstore_wfp.model.codec import pause_to_json, state_to_json


class Control:
    """Cancellation and pause requests of the instances of one store."""

    def __init__(self, snapshots: Snapshots, index: ReadyIndex, blobs: Blobs, clock: Clock) -> None:
        self.snapshots = snapshots
        self.index = index
        self.blobs = blobs
        self.clock = clock

    async def request_cancellation(self, instance_id: str, reason: str, requested_by: str) -> None:
        async def decide(stored: Snapshot) -> Write[None] | Keep[None]:
            if stored.state == "cancelled":
                return Keep(None)
            if stored.terminal:
                raise CannotCancelError(f"instance {instance_id!r} is {stored.state}")
            request = CancellationRequest(instance_id, reason, requested_by, self.clock.now())
            return Write(stored.encode(cancel=cancel_to_json(request)), None)

        await self.snapshots.update(instance_id, decide)

    async def clear_cancellation_request(self, instance_id: str) -> None:
        async def decide(stored: Snapshot) -> Write[None] | Keep[None]:
            return Keep(None) if stored.cancel is None else Write(stored.encode(cancel=None), None)

        with contextlib.suppress(NotFoundError):  # nothing to clear
            await self.snapshots.update(instance_id, decide)

    async def check_and_cancel(self, instance_id: str, interrupted_at_task: str | None) -> bool:
        instance = layout.encode_id(instance_id)

        async def decide(stored: Snapshot) -> Write[bool] | Keep[bool]:
            request = stored.cancellation()
            if request is None:
                return Keep(False)
            if stored.state != "in_progress":
                return Write(stored.encode(cancel=None), False)
            # The state's JSON names no results: they stay in the document's "results".
            state = Cancelled(request.reason, request.requested_by, self.clock.now(), {}, interrupted_at_task)
            return Write(stored.encode(state=state_to_json(state), ready={}, cancel=None, pause=None), True)

        cancelled, old = await self.snapshots.update(instance_id, decide)
        if cancelled and old is not None:
            await self.index.delete_quietly(
                layout.ready_key(s, instance, layout.encode_id(t)) for t, s in old.ready.items()
            )
        return bool(cancelled)

    async def set_pause(self, instance_id: str, request: PauseRequest | None) -> None:
        """Pause (``request``) or resume (``None``): a paused instance's ready tasks get entries
        due "never", so polls spend nothing on it; on resume, ready tasks get entries due now
        (leased: polls check their claims) and a wait's step one due when it is."""
        instance = layout.encode_id(instance_id)
        composer = Composer(self.blobs, self.index, instance)

        async def decide(stored: Snapshot) -> Decision[dict[str, str] | None]:
            if request is not None and stored.terminal:
                raise CannotPauseError(f"instance {instance_id!r} is {stored.state}")
            if (stored.pause is not None) == (request is not None):
                return Keep(None)  # paused already (the first request stays), or not paused
            now = self.clock.now()
            due: dict[str, datetime | None] = dict.fromkeys(stored.ready, None if request else now)
            wait = stored.wait()
            if request is None and wait is not None:
                due.pop(wait.step_id, None)
                wake = stored.wait_due(wait, now)
                if wake is not None:
                    due[wait.step_id] = wake
            ready = {t: ReadyIndex.leased_slot(stored.priority, d) for t, d in due.items()}
            keys = [layout.ready_key(slot, instance, layout.encode_id(t)) for t, slot in ready.items()]
            composer.entries.update(keys)
            await self.index.put(keys)
            pause = None if request is None else pause_to_json(request)
            return Write(stored.encode(pause=pause, ready=ready), ready)

        async with composer.discarded_on_error():
            ready, old = await self.snapshots.update(instance_id, decide)
        if old is None or ready is None:
            await self.index.delete_quietly(composer.entries)
            return
        await self.index.delete_quietly(composer.leftovers(ready) + unreferenced(old, ready, None))
