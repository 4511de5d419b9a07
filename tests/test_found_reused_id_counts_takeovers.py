"""Found by breaking: on an instance id used before (``Client.submit(..., if_exists="replace")``,
or an id submitted again after ``gc``) every task a ``Worker`` runs is counted as a takeover
and costs extra requests: a fence write in ``claim_task`` and a result read in the worker.

Tokens are kept across incarnations (docs/semantics.md: "Releasing keeps the token, and so does
deleting the instance"), so the first claim of a task in a new incarnation carries the old
token + 1. ``Worker._execute`` reads ``claim.token > 1`` as "the task changed hands since this
worker's find offered it": it reads the task's result first and counts a takeover
(``WorkerStats.takeovers``, the demo's "takeovers" line, the ``claimed`` event's token). The
backend, for its part, publishes a fence by a compare-and-swap of the snapshot whenever a claim
replaces a claim object, also a released one left by the old incarnation. ``objstore-wfp demo``
run twice on one store (after ``gc``) reports "takeovers 74" for 72 tasks and 11.4 store requests
per task instead of 6.8, with no worker killed but one.
"""

from __future__ import annotations

import pytest

from objstore_wfp.runtime import Client, Flow, Worker
from tests.backends import StoreTarget, local_store_target

__all__ = ["local_store_target"]

pytestmark = pytest.mark.timeout(60)


def double(x: int) -> int:
    return 2 * x


def plus_one(x: int) -> int:
    return x + 1


FLOW = Flow("reused").step(double).step(plus_one)


async def test_a_replaced_instance_has_no_takeovers(local_store_target: StoreTarget) -> None:
    async with local_store_target.backend() as backend:
        client = Client(backend, [FLOW])
        await client.submit(FLOW, 1, instance_id="order-1")
        await Worker(backend, [FLOW], poll_interval=0.01).run_until_idle()
        assert await client.result("order-1") == 3
        await client.submit(FLOW, 5, instance_id="order-1", if_exists="replace")
        worker = Worker(backend, [FLOW], poll_interval=0.01)
        await worker.run_until_idle()
        assert await client.result("order-1") == 11
        assert worker.stats.takeovers == 0, "nothing was taken over: nobody died or lost a lease"
