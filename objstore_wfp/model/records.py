"""Small value objects exchanged with backends."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from objstore_wfp.model.time import require_aware


@dataclass(frozen=True)
class TaskResult:
    """One recorded task output (opaque bytes)."""

    task_id: str
    output: bytes


@dataclass(frozen=True)
class TaskClaim:
    """A lease on one task. ``token`` is a fencing token: it grows every time the claim passes to
    a new holder, so a write carrying an older token can be recognised as stale.

    ``claimed_at`` and ``expires_at`` are in the wall clock of the backend that returned the
    claim (its ``clock.now()``): when it asked for the claim, and when it asked for the claim
    or its last renewal plus the TTL (the lease really ends no earlier); in ``list_claims``,
    that backend's now plus what the lease has left. Compare them with that clock only: other
    workers' clocks may be off by any amount, and expiry is never judged from these fields (see
    "Timing assumptions" in docs/semantics.md).

    ``takeover`` is a hint from backends that know it: the claim replaced an earlier holding of
    the same incarnation (one that expired or was released), so that holder may have recorded
    the task meanwhile. Tokens keep growing across a delete and re-create, so ``token > 1`` does
    not say this. It takes no part in equality."""

    instance_id: str
    task_id: str
    worker_id: str
    claimed_at: datetime
    expires_at: datetime | None
    token: int
    takeover: bool = field(default=False, compare=False, kw_only=True)

    def __post_init__(self) -> None:
        require_aware(self.claimed_at, "claimed_at")
        if self.expires_at is not None:
            require_aware(self.expires_at, "expires_at")

    def is_expired(self, now: datetime | None = None) -> bool:
        """True once ``now`` (default: the system clock; pass the returning backend's clock's
        ``now()``) reaches ``expires_at``.

        >>> from datetime import datetime, timedelta, timezone
        >>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
        >>> claim = TaskClaim("i", "t", "w", t, t + timedelta(seconds=10), 1)
        >>> claim.is_expired(t + timedelta(seconds=9)), claim.is_expired(t + timedelta(seconds=10))
        (False, True)
        """
        if self.expires_at is None:
            return False
        if now is None:
            from objstore_wfp.clock import SystemClock

            now = SystemClock().now()
        return now >= self.expires_at


@dataclass(frozen=True)
class AvailableTask:
    """A task a worker may claim, with the input it should run on."""

    instance_id: str
    task_id: str
    input: bytes | None
    workflow_definition_hash: str
    priority: int


@dataclass(frozen=True)
class CancellationRequest:
    """A pending request to cancel one workflow instance."""

    instance_id: str
    reason: str
    requested_by: str
    requested_at: datetime

    def __post_init__(self) -> None:
        require_aware(self.requested_at, "requested_at")


@dataclass(frozen=True)
class Signal:
    """A message sent to one workflow instance, buffered until a step waiting for ``name``
    consumes it. ``seq`` orders the signals of an instance: it increases with every signal sent
    to it since it was created (an instance deleted and created again numbers afresh)."""

    instance_id: str
    name: str
    payload: bytes
    seq: int
    sent_at: datetime

    def __post_init__(self) -> None:
        require_aware(self.sent_at, "sent_at")


@dataclass(frozen=True)
class PauseRequest:
    """A standing request to offer nothing of one instance until it is resumed."""

    reason: str
    requested_by: str
    requested_at: datetime

    def __post_init__(self) -> None:
        require_aware(self.requested_at, "requested_at")
