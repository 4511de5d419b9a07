"""Found by breaking: ``Client.submit(..., if_exists="replace")`` on a backend without atomic
create (``InMemoryBackend``, the Redis and PostgreSQL examples) frees its own submit lock when it
deletes the old instance, so a concurrent submit of the same id runs inside its critical section.

The lock is a claim on the reserved task ``@submit`` of the instance. The replacing submitter
takes it while the old incarnation exists, so the claim belongs to that incarnation, and the
``delete_snapshot`` that follows releases it with the instance's other claims (as the contract
says a delete must). A second submitter (here ``if_exists="error"``) then takes the lock at once,
finds no instance, creates its own and returns success; the replacer then saves over it in the
same incarnation. The second caller's instance is silently overwritten (its input gone, while a
worker may already run its first task with it and record into the replacer's instance, the
incarnations being the same). docs/runtime.md: "Concurrent submits of one id are serialised by
a claim on the reserved task id ``@submit``, so exactly one creates it." Expected: the second
submit waits for the replace and then raises ``InstanceExistsError``.
"""

from __future__ import annotations

import asyncio

import pytest

from objstore_wfp import InMemoryBackend
from objstore_wfp.runtime import Client, Flow
from objstore_wfp.runtime.errors import InstanceExistsError

pytestmark = pytest.mark.timeout(60)


def echo(x: int) -> int:
    return x


FLOW = Flow("submit-race").step(echo)


class PausingAfterDelete(InMemoryBackend):
    """Holds the first ``delete_snapshot`` after it has deleted, until ``proceed`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.deleted = asyncio.Event()
        self.proceed = asyncio.Event()

    async def delete_snapshot(self, instance_id: str) -> None:
        await super().delete_snapshot(instance_id)
        if not self.deleted.is_set():
            self.deleted.set()
            await self.proceed.wait()


async def test_a_submit_racing_a_replace_waits_for_it() -> None:
    backend = PausingAfterDelete()
    assert not backend.supports_create  # the lock path
    await Client(backend, [FLOW]).submit(FLOW, 1, instance_id="order")
    replacing = asyncio.ensure_future(
        Client(backend, [FLOW]).submit(FLOW, 2, instance_id="order", if_exists="replace")
    )
    await asyncio.wait_for(backend.deleted.wait(), 10)  # the replacer is inside its lock
    second = asyncio.ensure_future(Client(backend, [FLOW]).submit(FLOW, 3, instance_id="order"))
    await asyncio.sleep(0.5)
    entered = second.done() and second.exception() is None
    backend.proceed.set()
    await replacing
    assert not entered, "a submit of an id being replaced created it inside the replacer's lock"
    with pytest.raises(InstanceExistsError):
        await second
    snapshot = await backend.load_snapshot("order")
    assert snapshot.initial_input == b"2"
