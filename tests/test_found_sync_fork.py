"""Found by breaking: a ``SyncBackend`` made before ``fork()`` hangs forever in the child.

The README says to make one backend "once at import time". ``SyncBackend`` starts its
``BackgroundLoop`` thread in ``__init__``; ``fork()`` (gunicorn/uWSGI pre-fork workers, Celery's
prefork pool, ``multiprocessing`` on Linux before 3.14) copies the loop object into the child but
not the thread running it, so every sync call in the child submits its coroutine to a loop nobody
runs and blocks in ``future.result()`` forever: no error, no timeout. Expected: the call works in
the child (a new loop thread after fork) or fails at once with a clear error.
"""

from __future__ import annotations

import os
import signal
import time
import warnings

import pytest

from objstore_wfp import InMemoryBackend, WorkflowSnapshot
from objstore_wfp.sync import SyncBackend

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

#: How long the child's one call may take; an in-memory call takes microseconds.
CHILD_PATIENCE_SECONDS = 10.0


def _wait(pid: int, deadline: float) -> int | None:
    """The child's exit status, or ``None`` if it is still running at ``deadline``."""
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    return None


def test_sync_backend_made_before_fork_works_in_the_child() -> None:
    backend = SyncBackend(InMemoryBackend())
    try:
        backend.save_snapshot(WorkflowSnapshot("made-before-fork", "flow"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
            pid = os.fork()
        if pid == 0:  # the child: one sync call, then report by exit code
            code = 1
            try:
                code = 0 if backend.list_snapshots() == ["made-before-fork"] else 2
            except RuntimeError:
                code = 3  # a clear error is acceptable too
            finally:
                os._exit(code)
        status = _wait(pid, time.monotonic() + CHILD_PATIENCE_SECONDS)
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        assert status is not None, (
            f"a sync call in a forked child hung for {CHILD_PATIENCE_SECONDS}s (SyncBackend made "
            "before fork: its loop thread does not exist in the child)"
        )
        assert status in (0, 3), f"child exited with {status}"
    finally:
        backend.close()
