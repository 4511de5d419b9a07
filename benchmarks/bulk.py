"""Building thousands of stored instances quickly, for the scaling and worker figures.

The backend writes one instance of each kind into a ``memory://`` store; those objects become a
template whose instance id is swapped for ``b000000042`` etc., and the copies are written
straight to the target store (local files without fsync, or concurrent S3 PutObjects). The
result is byte for byte what the backend would have written, minus the nonces' variety, at a
fraction of the cost of going through the backend.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

from objstore_wfp.backends import layout
from objstore_wfp.backends.objectstore import ObjectStoreBackend
from objstore_wfp.model import AtTask, WorkflowSnapshot
from objstore_wfp.stores.memory import MemoryStore

_TEMPLATE_ID = "tpl0000000"
_READY_US = re.compile(r"^ready/\d/(\d{16})\.")
Objects = dict[str, bytes]


def instance_id(i: int, prefix: str = "b") -> str:
    """Ids of the same length as the template's, so substitution keeps every byte in place."""
    return f"{prefix}{i:0{len(_TEMPLATE_ID) - len(prefix)}d}"


async def template(build: Callable[[ObjectStoreBackend, str], Any]) -> Objects:
    """Every object ``build(backend, instance_id)`` leaves in an empty store."""
    store = MemoryStore(f"bench-template-{uuid.uuid4().hex}")
    backend = ObjectStoreBackend(store, verify_conditional_writes=False)
    await build(backend, _TEMPLATE_ID)
    objects: Objects = {}
    async for listed in store.list(""):
        found = await store.get(listed.key)
        assert found is not None
        objects[listed.key] = found.data
    return objects


def copies(objects: Objects, ids: Iterable[str]) -> Iterable[tuple[str, bytes]]:
    """The template's objects for each id (the store's layout marker once). Copy ``k`` became
    ready ``k`` milliseconds after the template, as if submitted one after another: the backend
    reads every task that ties at the microsecond where ``find_available_tasks`` reaches its
    limit, so a backlog that all became ready at one instant would be an unrealistic worst case.
    Every copy keeps the template's incarnation id: incarnations only ever compare within one
    instance."""
    old = _TEMPLATE_ID.encode()
    stamps = {m.group(1) for key in objects if (m := _READY_US.match(key))}
    if layout.MARKER in objects:
        yield layout.MARKER, objects[layout.MARKER]
    for k, new in enumerate(ids):
        for key, data in objects.items():
            if key == layout.MARKER:
                continue
            key, data = key.replace(_TEMPLATE_ID, new), data.replace(old, new.encode())
            for stamp in stamps:
                moved = f"{int(stamp) + 1000 * k:016d}"
                key, data = (
                    key.replace(f"/{stamp}.", f"/{moved}."),
                    data.replace(f"/{stamp}.".encode(), f"/{moved}.".encode()),
                )
            yield key, data


async def completed_instance(backend: ObjectStoreBackend, iid: str) -> None:
    """An instance that ran one task and completed as a runtime worker runs it: submitted,
    claimed, its output recorded and the workflow completed in one write; the claim object
    stays (it lapses, holding the task's token high-water mark)."""
    snapshot = WorkflowSnapshot(iid, "flow-v1", initial_input=b'"in"')
    snapshot.update_position(AtTask("t"))
    await backend.create_snapshot(snapshot)
    claim = await backend.claim_task(iid, "t", "w", timedelta(minutes=1))
    assert claim is not None

    def complete(done: WorkflowSnapshot) -> bool:
        done.mark_completed(b'"out"')
        return True

    await backend.record_and_advance(claim, b'"out"', complete)


def ready_instance(definition_hash: str, task: str) -> Callable[[ObjectStoreBackend, str], Any]:
    """An instance submitted and waiting at ``task`` (its ready entry included)."""

    async def build(backend: ObjectStoreBackend, iid: str) -> None:
        snapshot = WorkflowSnapshot(iid, definition_hash, initial_input=b"1")
        snapshot.update_position(AtTask(task))
        await backend.save_snapshot(snapshot)

    return build


def write_local(root: Path, items: Iterable[tuple[str, bytes]]) -> int:
    """Plain writes, then one ``sync()`` so that the kernel's writeback of thousands of fresh
    files does not compete with the measurement that follows."""
    made: set[Path] = set()
    n = 0
    for key, data in items:
        path = root / key
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        path.write_bytes(data)
        n += 1
    os.sync()
    return n


async def write_s3(
    client: Any, bucket: str, prefix: str, items: Iterable[tuple[str, bytes]], concurrency: int = 32
) -> int:
    queue = iter(items)
    count = 0

    async def drain() -> None:
        nonlocal count
        for key, data in queue:
            await client.put_object(Bucket=bucket, Key=prefix + key, Body=data)
            count += 1

    await asyncio.gather(*(drain() for _ in range(concurrency)))
    return count
