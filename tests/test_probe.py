"""The store probe on the in-process adapters and on stores that break the conditions in each
way a real store does (the S3 servers are probed in test_s3_store.py)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from objstore_wfp.errors import StoreUnavailableError, UnsupportedStoreError
from objstore_wfp.stores.base import ConditionalStore, ListedObject, StoredObject
from objstore_wfp.stores.local import LocalStore
from objstore_wfp.stores.memory import MemoryStore
from objstore_wfp.stores.probe import ProbeReport, probe_store


class Wrapped(ConditionalStore):
    """A memory store; subclasses break one condition."""

    def __init__(self) -> None:
        self.inner = MemoryStore(f"probe-{secrets.token_hex(6)}")

    @property
    def url(self) -> str:
        return self.inner.url

    async def get(self, key: str) -> StoredObject | None:
        return await self.inner.get(key)

    async def put(self, key: str, data: bytes) -> str:
        return await self.inner.put(key, data)

    async def put_if_absent(self, key: str, data: bytes) -> str | None:
        return await self.inner.put_if_absent(key, data)

    async def put_if_version(self, key: str, data: bytes, version: str) -> str | None:
        return await self.inner.put_if_version(key, data, version)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def delete_if_version(self, key: str, version: str) -> bool:
        return await self.inner.delete_if_version(key, version)

    async def list(self, prefix: str, *, start_after: str | None = None) -> AsyncIterator[ListedObject]:
        async for item in self.inner.list(prefix, start_after=start_after):
            yield item


class OverwritingCreate(Wrapped):
    """Ignores If-None-Match, like s3rver or rclone serve s3."""

    async def put_if_absent(self, key: str, data: bytes) -> str | None:
        return await self.inner.put(key, data)


class RefusingCreate(Wrapped):
    async def put_if_absent(self, key: str, data: bytes) -> str | None:
        return None


class IgnoringCas(Wrapped):
    async def put_if_version(self, key: str, data: bytes, version: str) -> str | None:
        return await self.inner.put(key, data)


class RefusingCas(Wrapped):
    async def put_if_version(self, key: str, data: bytes, version: str) -> str | None:
        return None


class UnconditionalDelete(Wrapped):
    async def delete_if_version(self, key: str, version: str) -> bool:
        await self.inner.delete(key)
        return True


class NotImplementedDelete(Wrapped):
    """Answers conditional delete like LocalStack (501), as the S3 adapter reports it."""

    async def delete_if_version(self, key: str, version: str) -> bool:
        raise UnsupportedStoreError(f"{self.url} does not support conditional delete (501)")


class NoConditionalDelete(Wrapped):
    supports_conditional_delete = False


class FailingCas(Wrapped):
    """The store goes away in the middle of the probe, and cleanup fails too."""

    async def put_if_version(self, key: str, data: bytes, version: str) -> str | None:
        raise StoreUnavailableError("store gone")

    async def delete(self, key: str) -> None:
        raise StoreUnavailableError("still gone")


async def _leftovers(store: ConditionalStore) -> list[str]:
    return [o.key async for o in store.list("")]


async def test_memory_and_local_stores_pass(tmp_path: Path) -> None:
    for store in (MemoryStore(f"probe-{secrets.token_hex(6)}"), LocalStore(tmp_path)):
        report = await probe_store(store)
        assert report == ProbeReport(store.url, True, True, True, "")
        assert store.supports_conditional_delete
        assert await _leftovers(store) == []


@pytest.mark.parametrize(
    ("store_class", "message"),
    [
        (OverwritingCreate, "create-if-absent: a second put-if-absent on an existing object was accepted"),
        (RefusingCreate, "create-if-absent: creating a fresh object was refused"),
        (IgnoringCas, "compare-and-swap: a put-if-version with a stale version was accepted"),
        (RefusingCas, "compare-and-swap: a put-if-version with the current version was refused"),
    ],
)
async def test_stores_that_break_claims_are_refused(store_class: type[Wrapped], message: str) -> None:
    store = store_class()
    with pytest.raises(UnsupportedStoreError, match=message) as raised:
        await probe_store(store)
    assert store.url in str(raised.value)
    assert await _leftovers(store) == [], "the probe cleans up even when it refuses"


@pytest.mark.parametrize(
    ("store_class", "note"),
    [
        (UnconditionalDelete, "stale version deleted the object"),
        (NotImplementedDelete, "(501)"),
        (NoConditionalDelete, "the adapter does not offer conditional delete"),
    ],
)
async def test_missing_conditional_delete_is_reported_not_fatal(
    store_class: type[Wrapped], note: str
) -> None:
    store = store_class()
    report = await probe_store(store)
    assert (report.create_if_absent, report.compare_and_swap, report.conditional_delete) == (
        True,
        True,
        False,
    )
    assert note in report.note
    assert store.supports_conditional_delete is False
    assert Wrapped.supports_conditional_delete is True, "only the probed instance changes"
    assert await _leftovers(store) == []


async def test_store_failure_during_the_probe_is_not_masked_by_cleanup() -> None:
    with pytest.raises(StoreUnavailableError, match="store gone"):
        await probe_store(FailingCas())


async def test_each_probe_uses_its_own_key() -> None:
    store = Wrapped()
    await store.put("_probe/keep", b"someone else's")
    await probe_store(store)
    await probe_store(store)
    assert await _leftovers(store) == ["_probe/keep"]
