"""InMemoryBackend against the conformance suite, plus its thread-safety."""

from __future__ import annotations

import pytest

from objstore_wfp import InMemoryBackend, ManualClock
from objstore_wfp.testing import BackendConformance


class TestInMemoryBackend(BackendConformance):
    @pytest.fixture
    def backend(self, clock: ManualClock) -> InMemoryBackend:
        return InMemoryBackend(clock=clock)
