"""ObjectStoreBackend on local disk and memory:// against the conformance suite."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from objstore_wfp import ManualClock, ObjectStoreBackend
from objstore_wfp.testing import BackendConformance


class TestObjectStoreOnMemory(BackendConformance):
    @pytest.fixture
    async def backend(self, clock: ManualClock) -> AsyncIterator[ObjectStoreBackend]:
        async with ObjectStoreBackend.from_url(f"memory://conf-{secrets.token_hex(6)}", clock=clock) as b:
            yield b


class TestObjectStoreOnLocalDisk(BackendConformance):
    @pytest.fixture
    async def backend(self, clock: ManualClock, tmp_path: Path) -> AsyncIterator[ObjectStoreBackend]:
        async with ObjectStoreBackend.from_url(str(tmp_path / "store"), clock=clock) as b:
            yield b
