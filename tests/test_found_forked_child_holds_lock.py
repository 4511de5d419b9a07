"""Found by breaking: on local disk, a process that forks while one of its threads is inside a
compare-and-swap hands the key's ``flock`` to the child, which holds it until it exits; every
write to that key's lock bucket, from every process, waits until then (no timeout).

``LocalStore._lock`` opens the bucket's lock file with ``O_CLOEXEC`` and flocks it in a worker
thread. ``fork()`` (``multiprocessing`` on Linux before 3.14, gunicorn/Celery prefork workers,
``subprocess`` with ``preexec_fn``) duplicates that descriptor into the child without the thread
that would close it; a ``flock`` lives until every descriptor of its open file is closed, and
``O_CLOEXEC`` only helps a child that execs. The same unbounded wait as
``test_found_stopped_lock_holder.py``, reached without any user action. Expected: writes of the
parent and of other processes go on while a forked child lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
import warnings
from pathlib import Path

import pytest

from objstore_wfp.stores.local import LocalStore
from tests.test_found_stopped_lock_holder import _lock_file, _locked_by_another

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
]

#: How long a write may wait while a forked child (doing nothing with the store) lives.
WRITE_PATIENCE_SECONDS = 10.0
KEY = "hot/key.json"


def _writer(store: LocalStore, stop: threading.Event) -> None:
    """Compare-and-swap ``KEY`` over and over (as a heartbeat or a busy worker does)."""

    async def run() -> None:
        version = await store.put(KEY, b"0")
        while not stop.is_set():
            version = await store.put_if_version(KEY, os.urandom(8), version) or version

    asyncio.run(run())


def test_a_forked_child_does_not_keep_the_parents_lock(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = LocalStore(root)
    lock = _lock_file(root, KEY)
    child = 0
    for _ in range(300):
        stop = threading.Event()
        thread = threading.Thread(target=_writer, args=(store, stop))
        thread.start()
        time.sleep(0.01)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
            child = os.fork()
        if child == 0:  # does nothing with the store, like a pool worker waiting for jobs
            time.sleep(60)
            os._exit(0)
        stop.set()
        thread.join()
        if _locked_by_another(lock):
            break
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        child = 0
    else:
        pytest.skip("no fork landed inside a compare-and-swap in 300 tries")
    try:

        async def write() -> None:
            other = LocalStore(root)  # another process's view of the store
            found = await other.get(KEY)
            assert found is not None
            try:
                await asyncio.wait_for(
                    other.put_if_version(KEY, b"after the fork", found.version), WRITE_PATIENCE_SECONDS
                )
            except asyncio.TimeoutError:
                os.kill(child, signal.SIGKILL)  # frees the thread stuck in flock
                raise AssertionError(
                    f"a compare-and-swap of {KEY!r} waited {WRITE_PATIENCE_SECONDS}s for a lock held "
                    "by a forked child that never touched the store"
                ) from None

        asyncio.run(write())
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
