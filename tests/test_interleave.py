"""The interleaving store wrapper itself: it forwards everything and holds where it is told."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from objstore_wfp.stores.base import ConditionalStore
from objstore_wfp.stores.memory import MemoryStore
from tests.interleave import InterleavingStore, at_every_boundary, crash_when, interleave


class ExtendedStore(MemoryStore):
    """An adapter with a method the interface does not have."""

    async def put_many(self, items: dict[str, bytes]) -> int:
        for key, data in items.items():
            await self.put(key, data)
        return len(items)


def wrapped() -> InterleavingStore:
    return InterleavingStore(ExtendedStore(f"interleave-{secrets.token_hex(6)}"))


async def three_requests(store: ConditionalStore) -> list[str]:
    await store.put("a", b"1")
    found = await store.get("a")
    assert found is not None
    await store.put_if_absent("b", b"2")
    return [o.key async for o in store.list("")]


def test_every_interface_method_is_forwarded() -> None:
    store = wrapped()
    assert isinstance(store, ConditionalStore)
    assert store.url == store.inner.url
    store.supports_conditional_delete = False
    assert store.inner.supports_conditional_delete is False


async def test_holds_before_the_kth_request_and_logs_every_request() -> None:
    store = wrapped()
    seen: list[tuple[str, str]] = []

    async def look() -> bool:
        seen.extend(store.requests)
        return await store.inner.get("b") is None

    outcome = await interleave(store, three_requests(store), look, at=2)
    assert outcome.stopped == ("put_if_absent", "b")
    assert outcome.interference is True  # held before the write
    assert seen == [("put", "a"), ("get", "a"), ("put_if_absent", "b")]
    assert outcome.value == ["a", "b"]
    assert store.requests[-1] == ("list", "")


async def test_holds_after_a_matching_request() -> None:
    store = wrapped()

    async def look() -> bool:
        return await store.inner.get("b") is not None

    outcome = await interleave(
        store, three_requests(store), look, at=0, match=lambda op, key: key == "b", after=True
    )
    assert outcome.stopped == ("put_if_absent", "b")
    assert outcome.interference is True  # held after the write


async def test_methods_the_interface_does_not_know_are_forwarded_and_held() -> None:
    store = wrapped()

    async def nothing() -> None:
        return None

    outcome = await interleave(store, store.put_many({"x": b"1", "y": b"2"}), nothing, at=0)
    assert outcome.stopped == ("put_many", "")
    assert outcome.value == 2
    assert ("put", "x") not in store.requests  # the adapter's own calls bypass the wrapper


async def test_a_sweep_covers_every_boundary_then_stops() -> None:
    held: list[tuple[str, str] | None] = []

    async def attempt(k: int) -> bool:
        store = wrapped()

        async def nothing() -> None:
            return None

        outcome = await interleave(store, three_requests(store), nothing, at=k)
        held.append(outcome.stopped)
        return outcome.stopped is not None

    assert await at_every_boundary(attempt) == 4
    assert held == [("put", "a"), ("get", "a"), ("put_if_absent", "b"), ("list", ""), None]


async def test_holds_a_caller_on_another_thread() -> None:
    store = wrapped()
    armed = store.stop(1)
    running = asyncio.ensure_future(asyncio.to_thread(asyncio.run, three_requests(store)))
    assert await armed.wait(10) == ("get", "a")
    assert not running.done()
    armed.resume()
    assert await asyncio.wait_for(running, 10) == ["a", "b"]


def test_a_negative_index_is_refused() -> None:
    with pytest.raises(ValueError):
        wrapped().stop(-1)


async def test_crash_when_kills_at_the_first_boundary_where_the_condition_holds() -> None:
    store = wrapped()

    async def a_written() -> bool:
        return await store.inner.get("a") is not None

    assert await crash_when(store, three_requests(store), a_written)
    assert store.requests == [("put", "a"), ("get", "a")]  # killed before the get was sent
    assert await store.inner.get("b") is None

    async def never() -> bool:
        return False

    other = wrapped()
    assert not await crash_when(other, three_requests(other), never)
    assert len(other.requests) == 4
