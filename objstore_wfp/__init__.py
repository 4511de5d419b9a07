"""objstore-wfp: persist workflow execution state on local disk and object storage.

See ``README.md`` for the quick start and ``docs/`` for the contract and the key layout.
"""

from objstore_wfp.backends.memory import InMemoryBackend
from objstore_wfp.backends.objectstore import ObjectStoreBackend
from objstore_wfp.clock import Clock, ManualClock, OffsetClock, SystemClock
from objstore_wfp.contract import PersistentBackend
from objstore_wfp.errors import (
    BackendError,
    CannotCancelError,
    CannotPauseError,
    ClaimLostError,
    ConflictError,
    InvalidArgumentError,
    InvalidIdentifierError,
    NotFoundError,
    SerializationError,
    StoreUnavailableError,
    UnsupportedStoreError,
)
from objstore_wfp.model import (
    AtDelay,
    AtFork,
    AtJoin,
    AtSignal,
    AtTask,
    AvailableTask,
    CancellationRequest,
    Cancelled,
    Completed,
    ExecutionPosition,
    Failed,
    InProgress,
    NotStarted,
    PauseRequest,
    Signal,
    TaskClaim,
    TaskResult,
    WorkflowSnapshot,
    WorkflowState,
)

__version__ = "0.1.0"

__all__ = [
    "AtDelay",
    "AtFork",
    "AtJoin",
    "AtSignal",
    "AtTask",
    "AvailableTask",
    "BackendError",
    "CancellationRequest",
    "CannotCancelError",
    "CannotPauseError",
    "Cancelled",
    "ClaimLostError",
    "Clock",
    "Completed",
    "ConflictError",
    "ExecutionPosition",
    "Failed",
    "InMemoryBackend",
    "InProgress",
    "InvalidArgumentError",
    "InvalidIdentifierError",
    "ManualClock",
    "NotFoundError",
    "NotStarted",
    "ObjectStoreBackend",
    "OffsetClock",
    "PauseRequest",
    "PersistentBackend",
    "SerializationError",
    "Signal",
    "StoreUnavailableError",
    "SystemClock",
    "TaskClaim",
    "TaskResult",
    "UnsupportedStoreError",
    "WorkflowSnapshot",
    "WorkflowState",
]
