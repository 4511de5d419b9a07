"""``memory://``: a process-local conditional store for tests and examples.

Every store opened on the same ``memory://`` root within one process shares the same objects, as
fsspec's memory filesystem does. One lock per root makes every operation atomic, so the store
keeps its promises under threads as well as asyncio tasks (fsspec's own MemoryFileSystem does not:
its exclusive create is check-then-act).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from objstore_wfp.stores.base import ConditionalStore, ListedObject, StoredObject

_versions = itertools.count(1)


@dataclass
class _Bucket:
    lock: threading.Lock = field(default_factory=threading.Lock)
    objects: dict[str, tuple[bytes, str]] = field(default_factory=dict)


_roots: dict[str, _Bucket] = {}
_roots_lock = threading.Lock()


def _bucket(root: str) -> _Bucket:
    with _roots_lock:
        return _roots.setdefault(root, _Bucket())


def _new_version() -> str:
    # A process-wide counter: never repeats, even for identical bytes (no ABA).
    return str(next(_versions))


class MemoryStore(ConditionalStore):
    """Objects in a dict shared by every ``MemoryStore`` with the same ``root`` in this process.

    >>> import asyncio
    >>> async def main():
    ...     store = MemoryStore("doctest-memory")
    ...     first = await store.put_if_absent("a/key", b"one")
    ...     second = await store.put_if_absent("a/key", b"two")
    ...     return first is not None, second, (await store.get("a/key")).data
    >>> asyncio.run(main())
    (True, None, b'one')
    """

    def __init__(self, root: str) -> None:
        self._root = root.strip("/")
        self._bucket = _bucket(self._root)

    @property
    def url(self) -> str:
        return f"memory://{self._root}"

    async def get(self, key: str) -> StoredObject | None:
        with self._bucket.lock:
            found = self._bucket.objects.get(key)
        return None if found is None else StoredObject(*found)

    async def put(self, key: str, data: bytes) -> str:
        version = _new_version()
        with self._bucket.lock:
            self._bucket.objects[key] = (bytes(data), version)
        return version

    async def put_if_absent(self, key: str, data: bytes) -> str | None:
        version = _new_version()
        with self._bucket.lock:
            if key in self._bucket.objects:
                return None
            self._bucket.objects[key] = (bytes(data), version)
        return version

    async def put_if_version(self, key: str, data: bytes, version: str) -> str | None:
        new_version = _new_version()
        with self._bucket.lock:
            found = self._bucket.objects.get(key)
            if found is None or found[1] != version:
                return None
            self._bucket.objects[key] = (bytes(data), new_version)
        return new_version

    async def delete(self, key: str) -> None:
        with self._bucket.lock:
            self._bucket.objects.pop(key, None)

    async def delete_if_version(self, key: str, version: str) -> bool:
        with self._bucket.lock:
            found = self._bucket.objects.get(key)
            if found is None or found[1] != version:
                return False
            del self._bucket.objects[key]
        return True

    async def list(self, prefix: str, *, start_after: str | None = None) -> AsyncIterator[ListedObject]:
        with self._bucket.lock:
            keys = sorted(
                (k, v)
                for k, (_, v) in self._bucket.objects.items()
                if k.startswith(prefix) and (start_after is None or k > start_after)
            )
        for key, version in keys:
            yield ListedObject(key, version)
