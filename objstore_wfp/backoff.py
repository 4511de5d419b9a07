"""The one backoff rule of the package: capped exponential growth with full jitter.

Full jitter (a uniform pick between zero and the capped exponential) spreads writers that lost
the same race, so they do not collide again in lockstep; see AWS's architecture blog,
"Exponential Backoff And Jitter" (2015). Store adapters use it between retries of failed
requests, the object-store backend and the runtime between compare-and-swap attempts.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delays in seconds: attempt ``n`` (1-based) waits ``uniform(0, min(cap, base * 2**(n-1)))``.

    >>> Backoff(base=0.5, cap=1.0).ceiling(1), Backoff(base=0.5, cap=1.0).ceiling(4)
    (0.5, 1.0)
    """

    base: float
    cap: float

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0:
            raise ValueError(f"backoff delays must be >= 0, got {self}")

    def ceiling(self, failures: int) -> float:
        """The largest delay after ``failures`` failed attempts (seconds)."""
        return min(self.cap, self.base * 2.0 ** max(failures - 1, 0))

    def delay(self, failures: int) -> float:
        """A jittered delay after ``failures`` failed attempts (seconds)."""
        ceiling: float = self.ceiling(failures)
        return random.uniform(0, ceiling)

    async def sleep(self, failures: int) -> None:
        await asyncio.sleep(self.delay(failures))


#: Between compare-and-swap attempts that lost a race: the winner's write takes one round trip,
#: so start at a few milliseconds and never wait long.
CONTENTION = Backoff(base=0.002, cap=0.25)
#: Compare-and-swap attempts before contention is reported as ``StoreUnavailableError``.
MAX_CAS_ATTEMPTS = 64
