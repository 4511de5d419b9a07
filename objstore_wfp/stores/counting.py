"""A store wrapper that counts requests, for request-budget tests, benchmarks and the demo."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

from objstore_wfp.stores.base import ConditionalStore, ListedObject, StoredObject

#: Keys a single LIST request returns at most (S3, GCS and Azure all page by 1,000).
LIST_PAGE = 1000


class CountingStore(ConditionalStore):
    """Forwards every call to ``inner`` and counts it as the remote requests it would cost.

    ``counts`` maps ``get``, ``put``, ``put_if_absent``, ``put_if_version``, ``delete``,
    ``delete_if_version`` and ``list`` (pages of up to 1,000 keys) to numbers.
    """

    def __init__(self, inner: ConditionalStore) -> None:
        self.inner = inner
        self.counts: Counter[str] = Counter()

    @property
    def supports_conditional_delete(self) -> bool:
        # Live, not copied: an adapter may learn only from its first refused delete.
        return self.inner.supports_conditional_delete

    @supports_conditional_delete.setter
    def supports_conditional_delete(self, value: bool) -> None:
        self.inner.supports_conditional_delete = value

    @property
    def url(self) -> str:
        return self.inner.url

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def reset(self) -> None:
        self.counts.clear()

    async def get(self, key: str) -> StoredObject | None:
        self.counts["get"] += 1
        return await self.inner.get(key)

    async def put(self, key: str, data: bytes) -> str:
        self.counts["put"] += 1
        return await self.inner.put(key, data)

    async def put_if_absent(self, key: str, data: bytes) -> str | None:
        self.counts["put_if_absent"] += 1
        return await self.inner.put_if_absent(key, data)

    async def put_if_version(self, key: str, data: bytes, version: str) -> str | None:
        self.counts["put_if_version"] += 1
        return await self.inner.put_if_version(key, data, version)

    async def delete(self, key: str) -> None:
        self.counts["delete"] += 1
        await self.inner.delete(key)

    async def delete_if_version(self, key: str, version: str) -> bool:
        self.counts["delete_if_version"] += 1
        return await self.inner.delete_if_version(key, version)

    async def list(self, prefix: str, *, start_after: str | None = None) -> AsyncIterator[ListedObject]:
        self.counts["list"] += 1
        seen = 0
        async for item in self.inner.list(prefix, start_after=start_after):
            if seen and seen % LIST_PAGE == 0:
                self.counts["list"] += 1
            seen += 1
            yield item

    async def discard_debris(self, older_than: float) -> int:
        return await self.inner.discard_debris(older_than)

    async def close(self) -> None:
        await self.inner.close()
