"""LangGraph's own conformance suite (``langgraph-checkpoint-conformance``) against the saver.

The suite is not pytest-native: ``validate()`` runs every capability the saver overrides and
returns a report; this test asserts that every capability was detected and every test passed.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES

from objstore_wfp.integrations.langgraph import ObjectStoreSaver
from tests.backends import StoreTarget

#: Tests in langgraph-checkpoint-conformance 0.0.2, all capabilities included.
CONFORMANCE_TESTS = 81


@pytest.mark.parametrize(
    "target_fixture",
    [
        pytest.param("local_store_target", id="local"),
        pytest.param("memory_store_target", id="memory"),
        pytest.param("moto_store_target", id="moto", marks=pytest.mark.slow),
        pytest.param("gcs_store_target", id="gcs", marks=pytest.mark.slow),
        pytest.param("azure_store_target", id="azure", marks=pytest.mark.slow),
    ],
)
async def test_conformance_suite_passes_fully(request: pytest.FixtureRequest, target_fixture: str) -> None:
    target: StoreTarget = request.getfixturevalue(target_fixture)

    # A fresh root per capability suite, as the suite asks of its factory.
    @checkpointer_test(name=f"ObjectStoreSaver[{target.name}]")
    async def factory() -> AsyncIterator[Any]:
        saver = ObjectStoreSaver.from_url(target.child(secrets.token_hex(4)).url, **target.options)
        try:
            yield saver
        finally:
            await saver.aclose()

    report = await validate(factory)
    results = report.results
    failures = {cap: r.failures for cap, r in results.items() if r.failures}
    assert failures == {}
    assert {cap for cap, r in results.items() if r.detected} == {c.value for c in ALL_CAPABILITIES}
    assert all(r.passed for r in results.values())
    assert sum(r.tests_passed for r in results.values()) == CONFORMANCE_TESTS
