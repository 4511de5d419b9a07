"""A synchronous API for code that is not async: :class:`SyncBackend` over any
:class:`~objstore_wfp.PersistentBackend` (and :class:`~objstore_wfp.runtime.SyncClient` over the
runtime's client).

Each wrapper runs its backend on one private event loop in a daemon thread
(:class:`BackgroundLoop`): a call submits the coroutine to that loop and blocks until it is done,
so the store's connections are made once and reused by every call, from any thread (calls from
several threads run concurrently on that loop). Method names, arguments, return values and errors
are the backend's own: a ``ConflictError`` raised by ``save_snapshot`` is raised by the sync
``save_snapshot`` too.

>>> from objstore_wfp import InMemoryBackend, WorkflowSnapshot
>>> with SyncBackend(InMemoryBackend()) as backend:
...     version = backend.save_snapshot(WorkflowSnapshot("order/1", "flow-v1"))
...     backend.list_snapshots()
['order/1']

Calling a sync method from a thread that is running an event loop would block that loop for
the whole call: it raises ``RuntimeError`` instead (await the async backend there). Calls from
other threads (a worker's thread pool, ``asyncio.to_thread``) are fine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import weakref
from collections.abc import Callable, Coroutine
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar

from objstore_wfp.contract import PersistentBackend
from objstore_wfp.model import (
    AvailableTask,
    CancellationRequest,
    PauseRequest,
    Signal,
    TaskClaim,
    WorkflowSnapshot,
)

T = TypeVar("T")

__all__ = ["BackgroundLoop", "SyncBackend"]


class BackgroundLoop:
    """An event loop of its own, running in a daemon thread until :meth:`close` (or until the
    object is garbage-collected, or the interpreter exits). Closing it runs the loop's normal
    shutdown (``asyncio.run``'s), so resources bound to it (store clients) are closed with it.

    ``fork()`` copies this object but not its thread (gunicorn's and Celery's pre-fork workers,
    ``multiprocessing`` with the fork start method): in the child, the first call starts a new
    loop thread, and store clients are made anew on it (the parent's are left alone: their
    connections are the parent's). A loop closed before the fork stays closed.
    """

    _closer: weakref.finalize[..., BackgroundLoop]

    def __init__(self, name: str = "objstore-wfp-loop") -> None:
        self._name = name
        self._forked = False
        self._restarting = threading.Lock()
        self._start()
        _loops.add(self)

    def _start(self) -> None:
        ready: concurrent.futures.Future[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = (
            concurrent.futures.Future()
        )
        thread = threading.Thread(target=_serve, args=(ready,), name=self._name, daemon=True)
        thread.start()
        self._loop, stopping = ready.result()
        self._closer = weakref.finalize(self, _stop, self._loop, stopping, thread)

    def _after_fork_in_child(self) -> None:
        # The loop's thread did not survive the fork, and its selector and wake-up pipe are
        # shared with the parent's loop: never touch them here (not even to close them). A
        # placeholder finalizer keeps ``closed`` meaningful; the next call starts a new loop.
        self._restarting = threading.Lock()  # a thread of the parent may have held it
        if self._closer.detach() is not None:
            self._closer = weakref.finalize(self, _nothing)
            self._forked = True

    def _restart_if_forked(self) -> None:
        with self._restarting:
            if self._forked and self._closer.alive:
                self._closer.detach()
                self._start()
                self._forked = False

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on this loop, block until it is done and return its result (or raise
        its exception). Interrupted (``KeyboardInterrupt``), it cancels the coroutine.

        Raises ``RuntimeError`` when called from a thread that runs an event loop, or after
        :meth:`close`.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coroutine.close()
            raise RuntimeError(
                "a synchronous objstore_wfp call from a thread that runs an event loop would block "
                "that loop: await the async backend here, or call from another thread"
            )
        if self._forked:
            self._restart_if_forked()
        if self.closed:
            coroutine.close()
            raise RuntimeError("this BackgroundLoop is closed")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # a no-op when the coroutine itself raised
            raise

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return not self._closer.alive

    def close(self) -> None:
        """Stop the loop (tasks still running are cancelled), close it and join its thread.
        Idempotent."""
        self._closer()


#: Every open BackgroundLoop of this process, to be restarted in a forked child.
_loops: weakref.WeakSet[BackgroundLoop] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for loop in list(_loops):
        loop._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _nothing() -> None:
    """The finalizer of a loop inherited through fork: it has nothing of its own to stop."""


def _serve(ready: concurrent.futures.Future[tuple[asyncio.AbstractEventLoop, asyncio.Event]]) -> None:
    async def serve() -> None:
        stopping = asyncio.Event()
        ready.set_result((asyncio.get_running_loop(), stopping))
        await stopping.wait()

    asyncio.run(serve())


def _stop(loop: asyncio.AbstractEventLoop, stopping: asyncio.Event, thread: threading.Thread) -> None:
    # No reference to the BackgroundLoop itself: this is its finalizer.
    try:
        loop.call_soon_threadsafe(stopping.set)
    except RuntimeError:
        return  # the loop is closed already
    if thread is not threading.current_thread():
        thread.join()


class SyncBackend:
    """Blocking versions of every :class:`~objstore_wfp.PersistentBackend` method, run on a
    :class:`BackgroundLoop` (its own, unless ``loop`` is given to share one). Each method takes
    the arguments of the async method of the same name and returns or raises what it does (the
    ``BackendError`` family); all of them also raise ``RuntimeError`` as :meth:`run` does.

    ``backend`` is the async backend underneath; :meth:`run` runs any other coroutine (for
    example ``sync.run(sync.backend.list_claims())``) on the same loop. A context manager:
    leaving the block calls :meth:`close`. Thread-safe.
    """

    def __init__(self, backend: PersistentBackend, *, loop: BackgroundLoop | None = None) -> None:
        self.backend = backend
        self.loop = loop or BackgroundLoop()
        self._owns_loop = loop is None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SyncBackend:
        """``SyncBackend(ObjectStoreBackend.from_url(url, **options))``."""
        from objstore_wfp.backends.objectstore import ObjectStoreBackend

        return cls(ObjectStoreBackend.from_url(url, **options))

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """See :meth:`BackgroundLoop.run`."""
        return self.loop.run(coroutine)

    @property
    def supports_create(self) -> bool:
        """The backend's: whether :meth:`create_snapshot` is one atomic create-if-absent."""
        return self.backend.supports_create

    # -- snapshots ---------------------------------------------------------------------------
    def save_snapshot(self, snapshot: WorkflowSnapshot) -> str:
        return self.run(self.backend.save_snapshot(snapshot))

    def load_snapshot(self, instance_id: str) -> WorkflowSnapshot:
        return self.run(self.backend.load_snapshot(instance_id))

    def create_snapshot(self, snapshot: WorkflowSnapshot) -> str:
        return self.run(self.backend.create_snapshot(snapshot))

    def delete_snapshot(self, instance_id: str, *, if_version: str | None = None) -> None:
        """``if_version`` is passed on only when given: a backend without it (any but
        ``ObjectStoreBackend``) then raises ``TypeError``."""
        if if_version is None:
            self.run(self.backend.delete_snapshot(instance_id))
        else:
            self.run(self.backend.delete_snapshot(instance_id, if_version=if_version))  # type: ignore[call-arg]

    def list_snapshots(self) -> list[str]:
        return self.run(self.backend.list_snapshots())

    # -- task results ------------------------------------------------------------------------
    def save_task_result(
        self, instance_id: str, task_id: str, output: bytes, *, claim: TaskClaim | None = None
    ) -> None:
        self.run(self.backend.save_task_result(instance_id, task_id, output, claim=claim))

    def load_task_result(self, instance_id: str, task_id: str) -> bytes | None:
        return self.run(self.backend.load_task_result(instance_id, task_id))

    # -- claims ------------------------------------------------------------------------------
    def claim_task(
        self, instance_id: str, task_id: str, worker_id: str, ttl: timedelta | None
    ) -> TaskClaim | None:
        return self.run(self.backend.claim_task(instance_id, task_id, worker_id, ttl))

    def release_task_claim(self, instance_id: str, task_id: str, worker_id: str) -> None:
        self.run(self.backend.release_task_claim(instance_id, task_id, worker_id))

    def extend_task_claim(
        self, instance_id: str, task_id: str, worker_id: str, additional_duration: timedelta
    ) -> TaskClaim:
        return self.run(self.backend.extend_task_claim(instance_id, task_id, worker_id, additional_duration))

    def find_available_tasks(self, worker_id: str, limit: int) -> list[AvailableTask]:
        return self.run(self.backend.find_available_tasks(worker_id, limit))

    def claim_available(
        self,
        worker_id: str,
        limit: int,
        ttl: timedelta | None,
        accept: Callable[[str, str, str], bool] = lambda instance_id, task_id, definition_hash: True,
    ) -> list[tuple[AvailableTask, TaskClaim]]:
        """``accept`` is called on the backend's loop thread."""
        return self.run(self.backend.claim_available(worker_id, limit, ttl, accept))

    def record_and_advance(
        self,
        claim: TaskClaim,
        output: bytes | None,
        advance: Callable[[WorkflowSnapshot], bool],
        *,
        reserve: timedelta | None = None,
        take: int = 1,
    ) -> tuple[WorkflowSnapshot, list[str]]:
        """``advance`` is called on the backend's loop thread."""
        return self.run(self.backend.record_and_advance(claim, output, advance, reserve=reserve, take=take))

    # -- cancellation ------------------------------------------------------------------------
    def request_cancellation(self, instance_id: str, reason: str, requested_by: str) -> None:
        self.run(self.backend.request_cancellation(instance_id, reason, requested_by))

    def get_cancellation_request(self, instance_id: str) -> CancellationRequest | None:
        return self.run(self.backend.get_cancellation_request(instance_id))

    def clear_cancellation_request(self, instance_id: str) -> None:
        self.run(self.backend.clear_cancellation_request(instance_id))

    def check_and_cancel(self, instance_id: str, interrupted_at_task: str | None = None) -> bool:
        return self.run(self.backend.check_and_cancel(instance_id, interrupted_at_task))

    # -- signals and pause -----------------------------------------------------------------
    def send_signal(self, instance_id: str, name: str, payload: bytes) -> Signal:
        return self.run(self.backend.send_signal(instance_id, name, payload))

    def list_signals(self, instance_id: str, name: str | None = None) -> list[Signal]:
        return self.run(self.backend.list_signals(instance_id, name))

    def deliver_signal(self, claim: TaskClaim) -> bytes | None:
        return self.run(self.backend.deliver_signal(claim))

    def pause_instance(self, instance_id: str, reason: str, requested_by: str) -> None:
        self.run(self.backend.pause_instance(instance_id, reason, requested_by))

    def resume_instance(self, instance_id: str) -> None:
        self.run(self.backend.resume_instance(instance_id))

    def get_pause_request(self, instance_id: str) -> PauseRequest | None:
        return self.run(self.backend.get_pause_request(instance_id))

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """Close the backend, then the loop if this wrapper made it. Idempotent."""
        try:
            if not self.loop.closed:
                self.run(self.backend.close())
        finally:
            if self._owns_loop:
                self.loop.close()

    def __enter__(self) -> SyncBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
