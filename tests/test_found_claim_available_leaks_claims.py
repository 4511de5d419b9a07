"""Found by breaking: when one candidate of ``claim_available`` fails with a store error, the
claims it already won in the same call are neither returned nor released: their tasks stay
held by a worker that does not know it holds them, until the lease expires (with ``ttl=None``,
forever: no poll ever offers them again).

``ObjectStoreBackend.claim_available`` gathers the attempts of a batch with
``return_exceptions=True`` and then re-raises the first error that is not a
``SerializationError``, dropping ``won``. One transient error on one candidate (a 503 that
outlived the retries: ``StoreUnavailableError``) thus costs every other task of the call a
full lease. Contract: a call that raises must not leave claims the caller cannot see (the
runtime's ``Worker`` polls with it, and a claim it does not hold is one it will neither run
nor release).
"""

from __future__ import annotations

import pytest

from objstore_wfp import AtTask, ObjectStoreBackend, WorkflowSnapshot
from objstore_wfp.backends import layout
from objstore_wfp.errors import StoreUnavailableError
from tests.backends import StoreTarget, local_store_target
from tests.test_zombies import HookStore

__all__ = ["local_store_target"]

pytestmark = pytest.mark.timeout(60)


async def test_a_failed_candidate_leaves_no_hidden_claims(local_store_target: StoreTarget) -> None:
    client = local_store_target.backend()
    async with client:
        for instance in ("good", "flaky"):
            snapshot = WorkflowSnapshot(instance, "flow", initial_input=b"in")
            snapshot.update_position(AtTask("t"))
            await client.save_snapshot(snapshot)
        worker: ObjectStoreBackend = local_store_target.backend_through(HookStore)
        hooks = worker.store
        assert isinstance(hooks, HookStore)

        async def unavailable() -> None:
            raise StoreUnavailableError("503 SlowDown, after every retry")

        hooks.before("get", layout.snapshot_key(layout.encode_id("flaky")), unavailable)
        returned = []
        try:
            returned = await worker.claim_available("worker", 2, ttl=None)
        except StoreUnavailableError:
            pass
        finally:
            await worker.close()
        assert hooks.fired == 1
        mine = {(claim.instance_id, claim.task_id) for _, claim in returned}
        held = {(c.instance_id, c.task_id) for c in await client.list_claims() if c.worker_id == "worker"}
        assert held == mine, f"claims held but never handed to the worker: {sorted(held - mine)}"
