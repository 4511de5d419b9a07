"""Injectable time: the one seam through which a backend or worker reads clocks.

A :class:`Clock` has two readings:

- ``now()``: wall-clock time (timezone-aware UTC). It stamps what users see (``claimed_at``,
  ``requested_at``, ready times) and may be off by any amount or step (NTP): no lease decision
  rests on it.
- ``monotonic()``: seconds on a clock that never steps and ticks at nearly the real rate. Leases
  are timed on it (see "Timing assumptions" in docs/semantics.md). ``domain`` names it: readings
  of two clocks with the same domain are comparable. The system clock's domain is the machine's
  boot (``CLOCK_MONOTONIC`` is one clock for every process on a Linux machine until it reboots).

Tests inject :class:`ManualClock` (time moves only when told) or :class:`OffsetClock` (a wall
clock off by a given amount, stepped at will, over the real monotonic clock).
"""

from __future__ import annotations

import secrets
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    """Wall-clock ``now()`` (timezone-aware UTC) and ``monotonic()`` seconds in ``domain``."""

    @property
    def domain(self) -> str: ...

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        # No boot id (not Linux): readings of this process are comparable only with each other.
        return f"process-{secrets.token_hex(8)}"


#: The largest rate error allowed to any clock that times a lease (1%: quartz is off by about
#: 0.01%, NTP slews at most 0.05%).
DRIFT = 0.01
#: Slack a holder keeps for its own reaction (abandoning a run, a write in flight): one
#: second, or a tenth of a TTL shorter than ten seconds.
MARGIN = 1.0


def window(ttl: float) -> float:
    """Seconds after sending a claim or renewal of ``ttl`` seconds during which its holder may
    act on it (on its own ``monotonic()``): ``ttl * (1 - 2 * DRIFT)`` less the margin, at
    least 0. A holder whose clock runs ``DRIFT`` slow ends it before a reader whose clock runs
    ``DRIFT`` fast can see ``ttl`` pass (see "Timing assumptions" in docs/semantics.md).

    >>> window(30.0), window(1.0)
    (28.4, 0.88)
    """
    return max(0.0, ttl * (1 - 2 * DRIFT) - min(MARGIN, ttl / 10))


#: The domain of ``time.monotonic()`` on this machine since it booted.
BOOT_DOMAIN = _boot_id()


class SystemClock:
    """The machine's wall clock and its monotonic clock (``time.monotonic``)."""

    domain = BOOT_DOMAIN

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()


class OffsetClock(SystemClock):
    """The system clock with its wall time off by ``offset``; :meth:`step` moves the wall time
    as an NTP step would, leaving the monotonic clock alone. Safe to share between threads.
    ``domain`` names its monotonic clock: give another name to act as another machine would
    (its monotonic readings then mean nothing to this one's). Tests use it to skew workers.

    >>> clock = OffsetClock(timedelta(hours=-1))
    >>> round((SystemClock().now() - clock.now()) / timedelta(minutes=1))
    60
    """

    def __init__(self, offset: timedelta = timedelta(0), *, domain: str = BOOT_DOMAIN) -> None:
        self._offset = offset
        self._lock = threading.Lock()
        self.domain = domain

    def now(self) -> datetime:
        with self._lock:
            return super().now() + self._offset

    def step(self, delta: timedelta) -> None:
        """Move the wall time by ``delta`` (either way)."""
        with self._lock:
            self._offset += delta


class ManualClock:
    """A clock that only moves when told to; safe to share between threads. Both readings move
    together on :meth:`advance`; its monotonic readings form a domain of their own.

    >>> from datetime import timedelta
    >>> clock = ManualClock()
    >>> start = clock.now()
    >>> clock.advance(timedelta(seconds=30))
    >>> (clock.now() - start).total_seconds(), clock.monotonic()
    (30.0, 30.0)
    """

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 1, tzinfo=timezone.utc)
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start time")
        self._start = start.astimezone(timezone.utc)
        self._elapsed = timedelta(0)
        self._lock = threading.Lock()
        self.domain = f"manual-{secrets.token_hex(8)}"

    def now(self) -> datetime:
        with self._lock:
            return self._start + self._elapsed

    def monotonic(self) -> float:
        with self._lock:
            return self._elapsed.total_seconds()

    def advance(self, delta: timedelta) -> None:
        if delta < timedelta(0):
            raise ValueError("time does not go backwards")
        with self._lock:
            self._elapsed += delta
