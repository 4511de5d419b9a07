"""Helpers shared by the conformance test groups: snapshot builders and readable assertions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from objstore_wfp.contract import PersistentBackend
from objstore_wfp.model import AtTask, ExecutionPosition, TaskClaim, WorkflowSnapshot

#: Every byte value once, so encodings that mangle a byte (NUL, non-UTF-8, quotes) are caught.
ALL_BYTES = bytes(range(256))
#: Larger than the object-store backend's inline limit (256 KiB), so large-object paths run.
LARGE = ALL_BYTES * 1200
TTL = timedelta(seconds=30)
TICK = timedelta(microseconds=1)


def make_snapshot(
    instance_id: str = "wf-1",
    position: ExecutionPosition | None = None,
    *,
    initial_input: bytes | None = b"initial",
    priority: int = 3,
    definition_hash: str = "def-1",
) -> WorkflowSnapshot:
    """An in-progress snapshot, by default waiting at ``AtTask("t1")``."""
    snapshot = WorkflowSnapshot(instance_id, definition_hash, initial_input=initial_input, priority=priority)
    snapshot.update_position(position if position is not None else AtTask("t1"))
    return snapshot


async def won_claim(
    backend: PersistentBackend, worker: str, ttl: timedelta | None = TTL, task: str = "t1"
) -> TaskClaim:
    """Claim ``task`` of ``"wf-1"`` for ``worker``; fails the test if the claim is refused."""
    claim = await backend.claim_task("wf-1", task, worker, ttl)
    assert claim is not None, f"{worker} should have won the claim on {task!r}, got None"
    return claim


@contextmanager
def expect(error: type[BaseException], why: str) -> Iterator[None]:
    """Like ``pytest.raises`` but the failure says what the contract expected and what happened."""
    try:
        yield
    except error:
        return
    except Exception as exc:
        raise AssertionError(f"{why}: expected {error.__name__}, got {type(exc).__name__}: {exc}") from exc
    raise AssertionError(f"{why}: expected {error.__name__}, but nothing was raised")
