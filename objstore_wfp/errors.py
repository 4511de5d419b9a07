"""The error family every backend raises.

Nothing else may escape a backend: storage clients' exceptions are translated at the store
edge, so callers can write ``except BackendError`` and be done.
"""

from __future__ import annotations


class BackendError(Exception):
    """Base class of every error a backend raises."""


class NotFoundError(BackendError):
    """The snapshot, claim or object asked for does not exist."""


class SerializationError(BackendError):
    """Stored bytes cannot be decoded, or a value cannot be encoded; the message names the object."""


class ConflictError(BackendError):
    """A compare-and-swap lost: the stored version moved, the stored state is terminal,
    or a different task output is already recorded."""


class ClaimLostError(BackendError):
    """The caller no longer holds the claim it acted on (released, expired and taken over)."""


class CannotCancelError(BackendError):
    """Cancellation was requested for a workflow that already completed or failed."""


class CannotPauseError(BackendError):
    """A pause was requested for a workflow that already completed, failed or was cancelled."""


class InvalidArgumentError(BackendError, ValueError):
    """An argument is out of range (a negative ``limit`` or TTL, a priority outside 1..5)."""


class InvalidIdentifierError(InvalidArgumentError):
    """An instance, task or worker id is empty, too long or contains control characters."""


class StoreUnavailableError(BackendError):
    """The store kept failing after retries; ``__cause__`` holds the last underlying error."""


class UnsupportedStoreError(BackendError):
    """The store does not enforce the conditional writes that claims and CAS rely on."""


__all__ = [
    "BackendError",
    "CannotCancelError",
    "CannotPauseError",
    "ClaimLostError",
    "ConflictError",
    "InvalidArgumentError",
    "InvalidIdentifierError",
    "NotFoundError",
    "SerializationError",
    "StoreUnavailableError",
    "UnsupportedStoreError",
]
