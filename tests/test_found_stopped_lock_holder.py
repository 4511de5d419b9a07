"""Found by breaking: on local disk, a worker stopped (SIGSTOP, a paused VM or container, a
debugger, a swap storm) while it holds a key's ``flock`` blocks every other process's write to
that key (and to the 1/4096 of all keys sharing its lock bucket) until it resumes: its task is
never taken over, although its lease expired.

README: "A crashed worker's task is taken over once its lease expires." A stopped worker is
indistinguishable from a crashed one to the others, and on S3/GCS/Azure a stalled writer blocks
nobody (fencing handles it). On local disk every compare-and-swap (a heartbeat, a claim takeover,
a fenced record) waits in ``fcntl.flock(LOCK_EX)`` with no timeout, in a thread that
``asyncio.wait_for`` cannot stop either, so the waiting worker's thread pool slowly fills with
threads blocked forever. Ctrl-Z on an ``objstore-wfp worker`` in a terminal (SIGTSTP) does the
same.

Expected, as fixed: the takeover fails within ``LOCK_WAIT_SECONDS`` with ``StoreUnavailableError``
naming the lock file (the waiting thread ends), and succeeds once the holder is gone. It cannot
succeed while the holder is stopped inside the lock: the holder may be between its version check
and its ``rename``, and would finish that write on resuming, over the takeover's (two holders of
one lease). On the object stores the check and the write are one request, so a stalled writer
stalls outside them; on local disk the lock is what makes them one. (The tester's first
expectation was the takeover succeeding while the holder stays stopped.)
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest

from objstore_wfp import AtTask, ObjectStoreBackend, StoreUnavailableError, WorkflowSnapshot
from objstore_wfp.backends import layout
from objstore_wfp.stores.local import LOCK_WAIT_SECONDS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

LEASE = timedelta(seconds=2)
#: How long a claim may wait for a lock held by a stopped process, beyond ``LOCK_WAIT_SECONDS``.
SLACK_SECONDS = 3.0

HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import timedelta
    from objstore_wfp import ObjectStoreBackend

    async def main():
        backend = ObjectStoreBackend.from_url(sys.argv[1])
        claim = await backend.claim_task("wf", "t", "holder", timedelta(seconds=2))
        assert claim is not None
        print("claimed", flush=True)
        while True:  # a heartbeat renewing as fast as it can: mostly inside the key's lock
            await backend.extend_task_claim("wf", "t", "holder", timedelta(seconds=2))

    asyncio.run(main())
    """
)


def _lock_file(root: Path, key: str) -> Path:
    # The local store's lock bucket of ``key`` (objstore_wfp.stores.local.LocalStore._lock).
    return root / ".locks" / f"{hashlib.blake2b(key.encode(), digest_size=4).hexdigest()[:3]}.lock"


def _locked_by_another(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)  # releases the lock if this process got it
    return False


def _stop_inside_lock(holder: subprocess.Popen[str], lock: Path) -> None:
    """SIGSTOP the holder at a moment it holds ``lock`` (retrying until it does)."""
    for _ in range(200):
        time.sleep(0.005)
        os.kill(holder.pid, signal.SIGSTOP)
        time.sleep(0.05)  # the stop is asynchronous
        if _locked_by_another(lock):
            return
        os.kill(holder.pid, signal.SIGCONT)
    pytest.fail("could not stop the holder inside its lock in 200 tries")


def test_a_stopped_holder_fails_the_takeover_in_bounded_time_then_it_is_taken_over(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()

    async def setup() -> None:
        async with ObjectStoreBackend.from_url(str(root)) as backend:
            snapshot = WorkflowSnapshot("wf", "flow")
            snapshot.update_position(AtTask("t"))
            await backend.save_snapshot(snapshot)

    asyncio.run(setup())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "claimed"
        lock = _lock_file(root, layout.claim_key(layout.encode_id("wf"), layout.encode_id("t")))
        _stop_inside_lock(holder, lock)
        stopped_at = time.monotonic()

        async def take_over() -> int | None:
            async with ObjectStoreBackend.from_url(str(root)) as backend:
                await asyncio.sleep(LEASE.total_seconds() + 0.5 - (time.monotonic() - stopped_at))
                started = time.monotonic()
                try:
                    await asyncio.wait_for(
                        backend.claim_task("wf", "t", "rescuer", LEASE), LOCK_WAIT_SECONDS + SLACK_SECONDS
                    )
                except asyncio.TimeoutError:
                    # Free the thread stuck in flock, so that this loop can shut down.
                    os.kill(holder.pid, signal.SIGKILL)
                    raise AssertionError(
                        f"claim_task of a task whose holder is stopped inside its lock still waits "
                        f"after {time.monotonic() - started:.1f}s"
                    ) from None
                except StoreUnavailableError as exc:
                    assert str(lock) in str(exc)
                    assert time.monotonic() - started >= LOCK_WAIT_SECONDS
                else:
                    raise AssertionError("claim_task took the lease of a holder stopped inside its lock")
                holder.kill()  # gone: its lock goes with it
                holder.wait()
                claim = await backend.claim_task("wf", "t", "rescuer", LEASE)
                return None if claim is None else claim.token

        assert asyncio.run(take_over()) == 2
    finally:
        holder.kill()
        holder.wait()
