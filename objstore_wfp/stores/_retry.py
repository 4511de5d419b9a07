"""Bounded retries with jittered exponential backoff for the cloud store adapters (GCS, Azure).

Retrying a *conditional* write is subtle: when a request fails after the store applied it (the
response was lost, a 5xx came back after the write committed), the retry meets its own write and
sees "condition false". :func:`with_retries` therefore tells each attempt whether an earlier one
may have been applied; the adapter then reads the object back and compares bytes. The backend
writes a unique nonce into every object, so equal bytes mean the write was ours.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from objstore_wfp.backoff import Backoff
from objstore_wfp.errors import StoreUnavailableError

if TYPE_CHECKING:
    # Only a type here: importing aiohttp costs ~0.12 s of CPU, which the obstore adapter (chosen
    # for short-lived serverless workers) would otherwise pay at every cold start.
    import aiohttp

T = TypeVar("T")


#: S3 error codes worth another attempt whatever their HTTP status (``RequestTimeout`` and the
#: throttling codes come with 400 or 429, ``ConditionalRequestConflict`` with 409).
S3_RETRYABLE_CODES = frozenset(
    {
        "ConditionalRequestConflict",
        "OperationAborted",
        "SlowDown",
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
        "RequestTimeoutException",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
    }
)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a store adapter retries transient failures.

    The defaults follow the clouds' advice for throttling (429, 503): exponential backoff from a
    quarter second with full jitter, at most eight seconds between attempts, six attempts.
    """

    attempts: int = 6
    base_delay: float = 0.25
    max_delay: float = 8.0
    #: Seconds one request may take before it counts as failed (and possibly applied).
    request_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < 0 or self.request_timeout <= 0:
            raise ValueError(f"invalid retry policy: {self}")

    def delay(self, failures: int) -> float:
        """Full-jitter backoff before the attempt that follows ``failures`` failed attempts."""
        return Backoff(self.base_delay, self.max_delay).delay(failures)


class TransientError(Exception):
    """Raised by an attempt that may succeed if repeated (throttling, 5xx, lost connection).

    ``maybe_applied`` is False only when the failure proves the store did not act on the
    request (a 429 or a connection that could not be opened).
    """

    def __init__(self, cause: BaseException, *, maybe_applied: bool = True) -> None:
        super().__init__(str(cause) or type(cause).__name__)
        self.cause = cause
        self.maybe_applied = maybe_applied


async def with_retries(policy: RetryPolicy, what: str, attempt: Callable[[bool], Awaitable[T]]) -> T:
    """Run ``attempt(maybe_applied)`` until it returns or raises something other than
    :class:`TransientError`; after ``policy.attempts`` transient failures raise
    :class:`StoreUnavailableError` with the last underlying error as ``__cause__``."""
    maybe_applied = False
    last: TransientError | None = None
    for failures in range(policy.attempts):
        if failures:
            await asyncio.sleep(policy.delay(failures))
        try:
            return await attempt(maybe_applied)
        except TransientError as exc:
            last = exc
            maybe_applied = maybe_applied or exc.maybe_applied
    assert last is not None
    raise StoreUnavailableError(f"{what}: still failing after {policy.attempts} attempts: {last}") from (
        last.cause
    )


def without_hidden_retries(session: aiohttp.ClientSession) -> aiohttp.ClientSession:
    """Stop aiohttp from silently resending an idempotent request (PUT, DELETE) when a reused
    connection breaks: the first send may have been applied, and a conditional write resent out
    of sight would then report its own write as a competitor's. Our own retries see the failure
    instead. (aiohttp has no public switch for this; without the private flag, behaviour is
    aiohttp's default and only liveness suffers.)"""
    if hasattr(session, "_retry_connection"):
        session._retry_connection = False
    return session
