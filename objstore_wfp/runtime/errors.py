"""Errors of the runtime layer (flows, workers, clients).

Backend errors (:mod:`objstore_wfp.errors`) pass through unchanged; these cover what only the
runtime knows about: flow definitions and the outcome of a workflow a client waits for.
"""

from __future__ import annotations

from objstore_wfp.errors import ConflictError


class FlowDefinitionError(ValueError):
    """A flow is malformed: a duplicate or illegal task name, a fork without join, no steps."""


class InstanceExistsError(ConflictError):
    """``submit(..., if_exists="error")`` found an instance with that id already stored."""


class WorkflowFailedError(Exception):
    """The workflow a client waited for ended ``Failed``; ``error`` holds the recorded reason."""

    def __init__(self, instance_id: str, error: str) -> None:
        super().__init__(f"workflow {instance_id!r} failed: {error}")
        self.instance_id = instance_id
        self.error = error


class WorkflowCancelledError(Exception):
    """The workflow a client waited for ended ``Cancelled``."""

    def __init__(self, instance_id: str, reason: str) -> None:
        super().__init__(f"workflow {instance_id!r} was cancelled: {reason}")
        self.instance_id = instance_id
        self.reason = reason
