"""The conformance suite for :class:`~objstore_wfp.PersistentBackend` implementations.

Every backend (in-memory, object stores, and third-party ones such as Redis or PostgreSQL)
must pass the same tests. To run them against yours, subclass :class:`BackendConformance` in a
pytest module and provide a ``backend`` fixture that returns an *empty* backend built on the
suite's ``clock`` fixture (a :class:`~objstore_wfp.ManualClock`: tests expire claims by
advancing it, so your backend must read time only from the clock it is given)::

    # tests/test_redis_backend.py
    import pytest_asyncio

    from objstore_wfp.testing import BackendConformance
    from my_package import RedisBackend


    class TestRedisBackend(BackendConformance):
        @pytest_asyncio.fixture
        async def backend(self, clock, redis_url):
            backend = RedisBackend(redis_url, prefix=unique_prefix(), clock=clock)
            yield backend
            await backend.close()

Each test gets a fresh ``backend`` (start from an empty prefix, database schema or key space)
and a fresh ``clock``. The two hypothesis tests (random legal ids, and random operation
sequences compared step by step with :class:`~objstore_wfp.InMemoryBackend` on the same clock)
run many examples on one backend and empty it between examples with ``list_snapshots`` and
``delete_snapshot``. The tests are ``async`` and marked for pytest-asyncio, so they run in
its strict mode too (then use ``@pytest_asyncio.fixture`` for an async fixture, as above).
Requirements: ``pytest``, ``pytest-asyncio`` and ``hypothesis``: the ``conformance`` extra,
``pip install 'objstore-wfp[conformance]'``.

The suite checks the contract's operations and the guarantees that one process can observe
(README.md, "Guarantees"), plus the choices recorded in ``docs/semantics.md``. Failures say which
rule broke. To skip a test your backend cannot pass yet, override it in the subclass with a
``pytest.mark.skip`` and say why; do not weaken it.
"""

try:
    from objstore_wfp.testing.conformance import BackendConformance
except ImportError as exc:
    if exc.name not in ("pytest", "pytest_asyncio", "hypothesis"):
        raise
    raise ImportError(
        f"objstore_wfp.testing needs {exc.name}: pip install 'objstore-wfp[conformance]'", name=exc.name
    ) from exc

__all__ = ["BackendConformance"]
