"""Found by breaking: a takeover that replaces a *dead* claim (of another incarnation) publishes
no fence, so a zombie of the current incarnation, stalled between its check and its write,
records after the new holder's claim was returned.

``Claims.claim`` publishes the new token into the snapshot's ``fences`` only when the claim it
replaces belongs to the same incarnation (``previous``). A worker whose snapshot cache still
holds a deleted incarnation (any long-running worker that touched the instance before a
``Client.submit(..., if_exists="replace")``) writes its claim with that stale incarnation over
an expired claim of the current one: a dead claim, so far harmless. But the next claimer, on a
fresh read, replaces that dead claim, and since it is "of another incarnation" no fence is
published. The zombie (token k, current incarnation, fence still below k) passed its own
``holding`` check before it stalled; its write then lands although a claim with token k+2 of the
same incarnation was returned before it. Contract guarantee 2: "once a claim has passed to a
new holder (token k+1), no write fenced by token <= k is accepted, however long its writer
stalled between checking and writing".
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from objstore_wfp import AtTask, ManualClock, ObjectStoreBackend, WorkflowSnapshot
from objstore_wfp.backends import layout
from objstore_wfp.errors import ClaimLostError
from tests.backends import StoreTarget, local_store_target, store_target
from tests.test_zombies import HookStore

__all__ = ["local_store_target", "store_target"]

pytestmark = pytest.mark.timeout(120)

INSTANCE = "replaced/instance"
TASK = "work"
TTL = timedelta(seconds=10)
SNAPSHOT_KEY = layout.snapshot_key(layout.encode_id(INSTANCE))


def _snapshot(data: bytes) -> WorkflowSnapshot:
    snapshot = WorkflowSnapshot(INSTANCE, "flow", initial_input=data)
    snapshot.update_position(AtTask(TASK))
    return snapshot


class Cast:
    """Four backends on one root sharing one manual clock."""

    def __init__(self, target: StoreTarget) -> None:
        self.clock = ManualClock()
        self.client = target.backend(clock=self.clock)  # submits and replaces
        self.stale = target.backend(clock=self.clock)  # a worker that cached the old incarnation
        self.rescuer = target.backend(clock=self.clock)  # a worker with a fresh view
        self.zombie: ObjectStoreBackend = target.backend_through(HookStore, clock=self.clock)
        assert isinstance(self.zombie.store, HookStore)
        self.hooks: HookStore = self.zombie.store

    async def close(self) -> None:
        for backend in (self.client, self.stale, self.rescuer, self.zombie):
            await backend.close()


@pytest.fixture
async def cast(store_target: StoreTarget) -> AsyncIterator[Cast]:
    c = Cast(store_target)
    yield c
    await c.close()


async def test_takeover_over_a_dead_claim_fences_the_zombie(cast: Cast) -> None:
    await cast.client.save_snapshot(_snapshot(b"old"))
    await cast.stale.load_snapshot(INSTANCE)  # caches the old incarnation
    await cast.client.delete_snapshot(INSTANCE)  # Client.submit(..., if_exists="replace")
    await cast.client.save_snapshot(_snapshot(b"new"))

    zombie_claim = await cast.zombie.claim_task(INSTANCE, TASK, "zombie", TTL)
    assert zombie_claim is not None
    await cast.zombie.load_snapshot(INSTANCE)  # the zombie reads its input
    rescuer_claims = []

    async def stall_then_take_over() -> None:
        # The zombie has passed its checks and is about to write its result; it stalls here
        # until its lease ran out, and two claims are taken meanwhile.
        cast.clock.advance(TTL + timedelta(seconds=1))
        stale = await cast.stale.claim_task(INSTANCE, TASK, "stale", TTL)
        assert stale is not None and stale.token == zombie_claim.token + 1
        # A claim bound to the current incarnation holds (the rescuer gets none); a dead one
        # of the old incarnation would be taken over at once, with a fence published.
        rescued = await cast.rescuer.claim_task(INSTANCE, TASK, "rescuer", TTL)
        assert rescued is None or rescued.token == zombie_claim.token + 2
        rescuer_claims.append(rescued or stale)

    # The zombie's save_task_result starts with the conditional write of the snapshot it
    # remembers (no read: it granted the claim and read the snapshot itself).
    cast.hooks.before("put_if_version", SNAPSHOT_KEY, stall_then_take_over)
    with pytest.raises(ClaimLostError):
        await cast.zombie.save_task_result(INSTANCE, TASK, b"zombie output", claim=zombie_claim)
    assert cast.hooks.fired == 1, "the takeover was never stepped in"
    assert rescuer_claims
    assert await cast.client.load_task_result(INSTANCE, TASK) is None


async def test_a_claim_of_a_deleted_incarnation_cannot_be_renewed(cast: Cast) -> None:
    """The same stale cache once handed out a dead claim and renewed it (semantics.md: a claim
    of another incarnation than the current one is dead). A claim is now bound to the
    incarnation read when it is taken; renewals check it on a fresh read
    (``tests/test_found_stale_cache_claim_without_object.py`` has the stricter case)."""
    await cast.client.save_snapshot(_snapshot(b"old"))
    await cast.stale.load_snapshot(INSTANCE)  # caches the old incarnation
    await cast.client.delete_snapshot(INSTANCE)
    await cast.client.save_snapshot(_snapshot(b"new"))
    claim = await cast.stale.claim_task(INSTANCE, TASK, "stale", TTL)
    if claim is None:
        return  # refused at once: fine
    # Never a dead claim: it is bound to the current incarnation (the claim reads the snapshot,
    # not a stale cache), so it is listed and renewable.
    assert [c.token for c in await cast.client.list_claims(INSTANCE)] == [claim.token]
    renewed = await cast.stale.extend_task_claim(INSTANCE, TASK, "stale", TTL)
    assert renewed.token == claim.token
