"""The one compare-and-swap loop: read an object, decide, write it conditionally, repeat on loss.

Every read-modify-write of the backend goes through :func:`compare_and_swap`, in the manner of
SlateDB's ``slatedb-txn-obj``: the loop knows nothing of workflows; a ``decide`` callback does,
and it sees the object exactly as the conditional write will replace it. A decision therefore
holds atomically: whatever ``decide`` checked (a fencing token, an incarnation, a terminal state)
cannot have changed when the write succeeds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from objstore_wfp.backoff import CONTENTION, MAX_CAS_ATTEMPTS
from objstore_wfp.errors import StoreUnavailableError
from objstore_wfp.stores.base import ConditionalStore, StoredObject

R = TypeVar("R")


@dataclass(frozen=True)
class Write(Generic[R]):
    """Replace the object with ``data`` (create it if it was absent); then return ``result``."""

    data: bytes
    result: R


@dataclass(frozen=True)
class Keep(Generic[R]):
    """Write nothing; return ``result``."""

    result: R


Decision = Write[R] | Keep[R]


class _Unread:
    """The type of :data:`UNREAD`: no copy known, read the object first."""

    pass


UNREAD = _Unread()


async def compare_and_swap(
    store: ConditionalStore,
    key: str,
    decide: Callable[[StoredObject | None], Awaitable[Decision[R]]],
    *,
    known: StoredObject | _Unread | None = UNREAD,
    what: str,
) -> tuple[R, str | None]:
    """Run ``decide`` on the object at ``key`` (``None`` when absent) and apply its decision with
    put-if-absent or put-if-version; on a lost race re-read and decide again, after a jittered
    pause. ``known`` is a copy the caller already holds, used for the first attempt only (a
    stale copy costs one refused write; a decision to keep it or an error is re-taken on a
    fresh read).
    Returns ``(result, new version or None if nothing was written)``. Errors raised by
    ``decide`` end the loop; after ``MAX_CAS_ATTEMPTS`` lost races it raises
    ``StoreUnavailableError`` naming ``what``."""
    current = known
    verified = False
    for attempt in range(MAX_CAS_ATTEMPTS):
        if isinstance(current, _Unread):
            current = await store.get(key)
            verified = True
        try:
            decision = await decide(current)
        except Exception:
            if verified:
                raise
            current = UNREAD  # refusing on a remembered copy: see below
            continue
        if isinstance(decision, Keep):
            if verified:
                return decision.result, None
            # Nothing vouches for a remembered copy but a write the store accepts: a decision
            # to write nothing, or to refuse, is taken again on a fresh read.
            current = UNREAD
            continue
        if current is None:
            version = await store.put_if_absent(key, decision.data)
        else:
            version = await store.put_if_version(key, decision.data, current.version)
        if version is not None:
            return decision.result, version
        current = UNREAD
        if attempt:
            await CONTENTION.sleep(attempt)
    raise StoreUnavailableError(f"{what}: too much write contention ({MAX_CAS_ATTEMPTS} lost races)")
