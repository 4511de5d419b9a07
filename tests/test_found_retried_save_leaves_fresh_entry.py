"""Found by breaking: an overwriting save that lost a race and retried leaves the fresh index
entry of its first attempt behind until after its winning write; a held task is offered from it
without a claim check, and a saver that dies (or stalls) right after its write leaves it so
for good (``repair`` removes entries of tasks that are not ready only).

``save_snapshot`` of a snapshot without ``version`` (an overwrite) retries its compare-and-swap
on a fresh read. Its first attempt, over a copy where task ``t`` was not ready, wrote a *fresh*
entry for ``t``; a concurrent save made ``t`` ready meanwhile (with its own fresh entry), so the
retry keeps that one and the first attempt's entry is deleted only in ``_after_write``, after
the write. A poll offers a fresh entry of a ready task without reading the claim ("a fresh
entry's task had no claim of this incarnation when it became ready"), and it does not compare
the entry with the slot the snapshot references: once ``t`` is claimed, the leftover entry
offers it to every poll. Contract: ``find_available_tasks`` returns "never a task that is ...
claimed by a live claim"; README guarantee 3 (a process killed at any instant).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from objstore_wfp import AtTask, ObjectStoreBackend, WorkflowSnapshot
from objstore_wfp.backends import layout
from tests.backends import StoreTarget, local_store_target, store_target
from tests.test_zombies import HookStore

__all__ = ["local_store_target", "store_target"]

pytestmark = pytest.mark.timeout(60)

TTL = timedelta(minutes=5)
SNAPSHOT_KEY = layout.snapshot_key(layout.encode_id("wf"))


def _at(task: str) -> WorkflowSnapshot:
    snapshot = WorkflowSnapshot("wf", "flow", initial_input=b"in")
    snapshot.update_position(AtTask(task))
    return snapshot


async def test_a_retried_save_leaves_no_entry_that_offers_a_held_task(store_target: StoreTarget) -> None:
    async with store_target.backend() as client, store_target.backend() as worker:
        saver: ObjectStoreBackend = store_target.backend_through(HookStore)
        hooks = saver.store
        assert isinstance(hooks, HookStore)
        await client.save_snapshot(_at("before"))
        await saver.load_snapshot("wf")  # the saver's copy: t is not ready
        stopped = asyncio.Event()

        async def concurrent_save() -> None:  # makes t ready first
            await client.save_snapshot(_at("t"))

        async def stop_after_the_write() -> None:  # SIGSTOP, or SIGKILL, right after it
            stopped.set()
            await asyncio.Event().wait()

        async def then_stop_after_the_retry() -> None:
            hooks.after("put_if_version", SNAPSHOT_KEY, stop_after_the_write)

        hooks.before("put_if_version", SNAPSHOT_KEY, concurrent_save)
        hooks.after("put_if_version", SNAPSHOT_KEY, then_stop_after_the_retry)
        saving = asyncio.ensure_future(saver.save_snapshot(_at("t")))  # an overwrite: retried
        try:
            await asyncio.wait_for(stopped.wait(), 30)
            assert await worker.claim_task("wf", "t", "worker", TTL) is not None
            offered = [t.task_id for t in await client.find_available_tasks("other", 10)]
            assert offered == [], "a task under a live claim is offered"
        finally:
            saving.cancel()
            await asyncio.gather(saving, return_exceptions=True)
            await saver.close()
