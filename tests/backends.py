"""Where the hard ObjectStoreBackend tests run: a list of store targets, one fixture each.

Every test in ``test_races``, ``test_zombies``, ``test_crashes``, ``test_hostile`` and
``test_request_budget`` takes the ``store_target`` fixture, which yields a fresh, empty root
(a :class:`StoreTarget`) on each store kind named in :data:`STORE_TARGETS`.

Extension point: to run the same tests on another store (S3 on moto_server or LocalStack, ...),
write a fixture that yields a :class:`StoreTarget` for a fresh root (``url`` plus the
``options`` that ``ObjectStoreBackend.from_url`` needs, picklable, since child processes get
them), define or import it in this module, and add its name to the :data:`STORE_TARGETS` list
below, e.g. ``pytest.param("moto_store_target", id="moto")`` (pytest reads the list when this
module is imported, so appending from elsewhere later has no effect).
Tests that need a local directory (planting a directory where an object is expected) skip
when ``local_root`` is ``None``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from objstore_wfp import ObjectStoreBackend
from objstore_wfp.stores.base import ConditionalStore
from objstore_wfp.stores.urls import open_store
from tests.servers.s3 import S3Endpoint


@dataclass(frozen=True)
class StoreTarget:
    """One fresh, empty backend root that every process of a test can open."""

    name: str
    url: str
    #: Keyword arguments for ``ObjectStoreBackend.from_url`` (storage options; picklable).
    options: dict[str, Any] = field(default_factory=dict)
    #: The directory behind ``url`` when the store is local disk, else ``None``.
    local_root: Path | None = None
    #: False where every process sees its own objects (``memory://``): multi-process tests skip.
    shared_between_processes: bool = True

    def child(self, name: str) -> StoreTarget:
        """A fresh root nested under this one (for tests that need many roots)."""
        local = None if self.local_root is None else self.local_root / name
        return replace(self, url=f"{self.url.rstrip('/')}/{name}", local_root=local)

    def backend(self, **kwargs: Any) -> ObjectStoreBackend:
        """A backend on this root; ``kwargs`` (``clock=``, ``inline_limit=``...) go to ``from_url``."""
        return ObjectStoreBackend.from_url(self.url, **self.options, **kwargs)

    def backend_through(
        self, wrap: Callable[[ConditionalStore], ConditionalStore], **kwargs: Any
    ) -> ObjectStoreBackend:
        """A backend whose every request goes through ``wrap(<the raw store>)`` (a counting,
        hooking or dying store). The backend's parts keep the store they were built with, so a
        wrapper must be in place at construction: assigning ``backend.store`` later misses them."""
        return ObjectStoreBackend(wrap(self.store()), **kwargs)

    def store(self) -> ConditionalStore:
        """The raw store under the root, for planting and inspecting objects."""
        return open_store(self.url, **self.options)

    async def copy_from(self, source: StoreTarget) -> None:
        """Fill this (empty) root with a copy of every object under ``source``."""
        if self.local_root is not None and source.local_root is not None:
            await asyncio.to_thread(shutil.copytree, source.local_root, self.local_root)
            return
        store = source.store()
        try:
            objects = {}
            async for obj in store.list(""):
                found = await store.get(obj.key)
                if found is not None:
                    objects[obj.key] = found.data
        finally:
            await store.close()
        await self.seed(objects)

    async def seed(self, objects: Mapping[str, bytes]) -> None:
        """Write many objects quickly (no conditions, no durability needed): test set-up only."""
        if self.local_root is not None:
            await asyncio.to_thread(_write_files, self.local_root, objects)
            return
        store = self.store()
        try:
            items = list(objects.items())
            for start in range(0, len(items), 64):
                await asyncio.gather(*(store.put(k, v) for k, v in items[start : start + 64]))
        finally:
            await store.close()


def _write_files(root: Path, objects: Mapping[str, bytes]) -> None:
    made: set[Path] = set()
    for key, data in objects.items():
        path = root / key
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        with open(path, "wb") as f:
            f.write(data)


@pytest.fixture
def local_store_target(tmp_path: Path) -> StoreTarget:
    root = tmp_path / f"store-{secrets.token_hex(4)}"
    return StoreTarget("local", os.fspath(root), local_root=root)


@pytest.fixture
def memory_store_target() -> StoreTarget:
    """A ``memory://`` root: only for single-process tests that name it explicitly."""
    return StoreTarget("memory", f"memory://hard-{secrets.token_hex(8)}", shared_between_processes=False)


@pytest.fixture(scope="session")
def moto_hard_bucket(moto_s3: S3Endpoint) -> str:
    return moto_s3.create_bucket("hard")


@pytest.fixture(scope="session")
def localstack_hard_bucket(localstack_s3: S3Endpoint) -> str:
    return localstack_s3.create_bucket("hard")


#: Hard tests that take too long against an S3 server, with why: they run on local disk only.
TOO_SLOW_ON_S3 = {
    "test_crash_at_every_store_request": "one fresh process per kill point, each importing s3fs and "
    "paying S3 round trips: over 300 s on moto_server",
}


def _s3_target(
    request: pytest.FixtureRequest, name: str, endpoint: S3Endpoint, bucket: str, scheme: str = "s3"
) -> StoreTarget:
    reason = TOO_SLOW_ON_S3.get(getattr(request.node, "originalname", ""))
    if reason:
        pytest.skip(f"too slow on S3: {reason}")
    return StoreTarget(name, f"{scheme}://{bucket}/{secrets.token_hex(8)}", endpoint.storage_options())


@pytest.fixture
def moto_store_target(
    request: pytest.FixtureRequest, moto_s3: S3Endpoint, moto_hard_bucket: str
) -> StoreTarget:
    """A fresh prefix in one session bucket on moto_server."""
    return _s3_target(request, "moto", moto_s3, moto_hard_bucket)


@pytest.fixture
def moto_obstore_store_target(
    request: pytest.FixtureRequest, moto_s3: S3Endpoint, moto_hard_bucket: str
) -> StoreTarget:
    """A fresh prefix in the moto_server session bucket, through the obstore adapter."""
    return _s3_target(request, "moto-obstore", moto_s3, moto_hard_bucket, scheme="s3+obstore")


@pytest.fixture
def localstack_store_target(
    request: pytest.FixtureRequest, localstack_s3: S3Endpoint, localstack_hard_bucket: str
) -> StoreTarget:
    """A fresh prefix in one session bucket on LocalStack (no conditional delete: the fallback)."""
    return _s3_target(request, "localstack", localstack_s3, localstack_hard_bucket)


#: The fixtures ``store_target`` is parametrized over. Append ``pytest.param(<fixture name>, id=...)``.
STORE_TARGETS: list[Any] = [
    pytest.param("local_store_target", id="local"),
    pytest.param("moto_store_target", id="moto", marks=pytest.mark.slow),
    pytest.param("localstack_store_target", id="localstack", marks=pytest.mark.slow),
    pytest.param("moto_obstore_store_target", id="moto-obstore", marks=pytest.mark.slow),
]


@pytest.fixture(params=STORE_TARGETS)
def store_target(request: pytest.FixtureRequest) -> StoreTarget:
    """A fresh root on every store kind of :data:`STORE_TARGETS`."""
    target: StoreTarget = request.getfixturevalue(request.param)
    return target


__all__ = [
    "STORE_TARGETS",
    "StoreTarget",
    "local_store_target",
    "localstack_hard_bucket",
    "localstack_store_target",
    "memory_store_target",
    "moto_hard_bucket",
    "moto_obstore_store_target",
    "moto_store_target",
    "store_target",
]
