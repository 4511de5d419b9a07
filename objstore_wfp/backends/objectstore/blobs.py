"""Byte values too large to inline: one immutable object each, under the incarnation's folder.

Blob keys are unique (a time stamp and a nonce) and belong to one incarnation, so deleting an
incarnation's folder can never remove a blob of the instance created again under the same id.
"""

from __future__ import annotations

from datetime import datetime

from objstore_wfp.backends import layout
from objstore_wfp.backends.objectstore.documents import Stash, check_stash, digest, inline, nonce, same
from objstore_wfp.errors import SerializationError
from objstore_wfp.model.codec import b64
from objstore_wfp.stores.base import ConditionalStore


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class MissingBlobError(SerializationError):
    """A referenced blob is absent: the copy that referenced it may have been deleted or
    replaced meanwhile (see :meth:`.snapshots.Snapshots.reading`), else the store is damaged."""


class Blobs:
    """Stores values above ``inline_limit`` bytes as blobs; reads and checks them back."""

    def __init__(self, store: ConditionalStore, inline_limit: int) -> None:
        self.store = store
        self.inline_limit = inline_limit

    async def stash(self, instance: str, incarnation: str, data: bytes, now: datetime) -> Stash:
        if len(data) <= self.inline_limit:
            return b64(data)
        key = layout.blob_key(instance, incarnation, f"{epoch_ms(now):013d}.{nonce()}")
        await self.store.put_if_absent(key, data)
        return {"blob": key, "size": len(data), "digest": digest(data)}

    async def stash_unless_stored(
        self, stored: object, data: bytes, instance: str, incarnation: str, now: datetime, key: str
    ) -> Stash:
        """``stored`` when it already holds ``data`` (a re-save uploads no new blob), else a new
        stash."""
        if stored is not None:
            try:
                value = check_stash(stored, "value", key)
            except SerializationError:
                value = None
            if value is not None and same(value, data):
                return value
        return await self.stash(instance, incarnation, data, now)

    async def unstash(self, value: Stash, what: str) -> bytes:
        if isinstance(value, str):
            return inline(value, what)
        found = await self.store.get(value["blob"])
        if found is None:
            raise MissingBlobError(f"{what}: blob {value['blob']!r} is missing")
        if len(found.data) != value["size"] or digest(found.data) != value["digest"]:
            raise SerializationError(f"{what}: blob {value['blob']!r} does not match its digest")
        return found.data

    async def drop(self, value: Stash | None) -> None:
        """Delete a blob this writer stashed but could not use (nobody else references it)."""
        if isinstance(value, dict):
            await self.store.delete(value["blob"])


def blob_keys(doc: dict[str, object]) -> list[str]:
    """Every blob a snapshot document references."""
    values: list[object] = [doc.get("initial_input")]
    results = doc.get("results")
    if isinstance(results, dict):
        values.extend(results.values())
    state = doc.get("state")
    if isinstance(state, dict):
        values.append(state.get("final_output"))
    return [v["blob"] for v in values if isinstance(v, dict) and isinstance(v.get("blob"), str)]
