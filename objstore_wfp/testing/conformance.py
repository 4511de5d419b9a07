"""``BackendConformance``: the one test class every backend subclasses.

See :mod:`objstore_wfp.testing` for how to use it.
"""

from __future__ import annotations

import pytest

from objstore_wfp.clock import ManualClock
from objstore_wfp.testing._cancellation import CancellationTests
from objstore_wfp.testing._claims import ClaimTests
from objstore_wfp.testing._differential import DifferentialTests
from objstore_wfp.testing._finding import FindingTests
from objstore_wfp.testing._identifiers import ArgumentTests, IdentifierTests
from objstore_wfp.testing._incarnations import IncarnationTests
from objstore_wfp.testing._snapshots import SnapshotTests
from objstore_wfp.testing._waits import WaitTests


class BackendConformance(
    SnapshotTests,
    ClaimTests,
    IncarnationTests,
    FindingTests,
    CancellationTests,
    WaitTests,
    IdentifierTests,
    ArgumentTests,
    DifferentialTests,
):
    """The contract of :class:`~objstore_wfp.PersistentBackend` as tests.

    Subclass it in a ``test_*.py`` module as ``Test<Something>`` and provide a ``backend``
    fixture that builds an empty backend on the ``clock`` fixture. Every test is ``async`` and
    marked for pytest-asyncio; tests move time with ``clock.advance`` and never sleep.
    """

    pytestmark = pytest.mark.asyncio

    @pytest.fixture
    def clock(self) -> ManualClock:
        """The backend's clock; tests advance it to expire claims."""
        return ManualClock()
