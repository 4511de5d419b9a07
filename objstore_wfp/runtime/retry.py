"""When a failing task is tried again, and when the workflow gives up."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff between attempts of one task; after ``max_attempts`` failures the
    workflow is marked ``Failed``.

    Attempts are counted by the worker that holds the task's claim (it keeps the lease alive while
    it backs off). If that worker dies, the next one starts counting from one again.

    >>> policy = RetryPolicy(max_attempts=4, initial_backoff=0.5, multiplier=2.0, max_backoff=1.5)
    >>> [policy.backoff(n) for n in (1, 2, 3)]
    [0.5, 1.0, 1.5]
    """

    max_attempts: int = 3
    initial_backoff: float = 1.0
    multiplier: float = 2.0
    max_backoff: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("backoffs must be >= 0 and the multiplier >= 1")

    def backoff(self, failed_attempt: int) -> float:
        """Seconds to wait after attempt number ``failed_attempt`` (1-based) failed."""
        return min(self.max_backoff, self.initial_backoff * self.multiplier ** (failed_attempt - 1))
