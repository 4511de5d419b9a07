"""The synchronous API (``objstore_wfp.sync``): ``SyncBackend`` and ``SyncClient``.

The conformance suite runs once through ``SyncBackend`` (presented back as async by a thin
adapter that calls each sync method in a thread), so every promise of the contract is kept
through the wrapper, errors included.
"""

from __future__ import annotations

import asyncio
import gc
import os
import secrets
import signal
import threading
import time
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from objstore_wfp import (
    AtTask,
    ClaimLostError,
    ConflictError,
    InMemoryBackend,
    InvalidIdentifierError,
    ManualClock,
    NotFoundError,
    ObjectStoreBackend,
    PersistentBackend,
    WorkflowSnapshot,
)
from objstore_wfp.model import AvailableTask, CancellationRequest, PauseRequest, Signal, TaskClaim
from objstore_wfp.runtime import Flow, SyncClient, Worker, WorkflowFailedError
from objstore_wfp.sync import BackgroundLoop, SyncBackend
from objstore_wfp.testing import BackendConformance
from tests.leaks import no_complaints, open_sessions
from tests.servers.s3 import S3Endpoint

TTL = timedelta(seconds=30)


class AsyncOverSync(PersistentBackend):
    """A ``SyncBackend`` presented as a ``PersistentBackend`` again: each call runs the sync
    method in a worker thread, as async code calling blocking code would."""

    def __init__(self, sync: SyncBackend) -> None:
        self.sync = sync

    async def save_snapshot(self, snapshot: WorkflowSnapshot) -> str:
        return await asyncio.to_thread(self.sync.save_snapshot, snapshot)

    async def load_snapshot(self, instance_id: str) -> WorkflowSnapshot:
        return await asyncio.to_thread(self.sync.load_snapshot, instance_id)

    async def delete_snapshot(self, instance_id: str) -> None:
        await asyncio.to_thread(self.sync.delete_snapshot, instance_id)

    async def list_snapshots(self) -> list[str]:
        return await asyncio.to_thread(self.sync.list_snapshots)

    async def save_task_result(
        self, instance_id: str, task_id: str, output: bytes, *, claim: TaskClaim | None = None
    ) -> None:
        await asyncio.to_thread(self.sync.save_task_result, instance_id, task_id, output, claim=claim)

    async def load_task_result(self, instance_id: str, task_id: str) -> bytes | None:
        return await asyncio.to_thread(self.sync.load_task_result, instance_id, task_id)

    async def claim_task(
        self, instance_id: str, task_id: str, worker_id: str, ttl: timedelta | None
    ) -> TaskClaim | None:
        return await asyncio.to_thread(self.sync.claim_task, instance_id, task_id, worker_id, ttl)

    async def release_task_claim(self, instance_id: str, task_id: str, worker_id: str) -> None:
        await asyncio.to_thread(self.sync.release_task_claim, instance_id, task_id, worker_id)

    async def extend_task_claim(
        self, instance_id: str, task_id: str, worker_id: str, additional_duration: timedelta
    ) -> TaskClaim:
        return await asyncio.to_thread(
            self.sync.extend_task_claim, instance_id, task_id, worker_id, additional_duration
        )

    async def find_available_tasks(self, worker_id: str, limit: int) -> list[AvailableTask]:
        return await asyncio.to_thread(self.sync.find_available_tasks, worker_id, limit)

    async def request_cancellation(self, instance_id: str, reason: str, requested_by: str) -> None:
        await asyncio.to_thread(self.sync.request_cancellation, instance_id, reason, requested_by)

    async def get_cancellation_request(self, instance_id: str) -> CancellationRequest | None:
        return await asyncio.to_thread(self.sync.get_cancellation_request, instance_id)

    async def clear_cancellation_request(self, instance_id: str) -> None:
        await asyncio.to_thread(self.sync.clear_cancellation_request, instance_id)

    async def check_and_cancel(self, instance_id: str, interrupted_at_task: str | None = None) -> bool:
        return await asyncio.to_thread(self.sync.check_and_cancel, instance_id, interrupted_at_task)

    async def send_signal(self, instance_id: str, name: str, payload: bytes) -> Signal:
        return await asyncio.to_thread(self.sync.send_signal, instance_id, name, payload)

    async def list_signals(self, instance_id: str, name: str | None = None) -> list[Signal]:
        return await asyncio.to_thread(self.sync.list_signals, instance_id, name)

    async def deliver_signal(self, claim: TaskClaim) -> bytes | None:
        return await asyncio.to_thread(self.sync.deliver_signal, claim)

    async def pause_instance(self, instance_id: str, reason: str, requested_by: str) -> None:
        await asyncio.to_thread(self.sync.pause_instance, instance_id, reason, requested_by)

    async def resume_instance(self, instance_id: str) -> None:
        await asyncio.to_thread(self.sync.resume_instance, instance_id)

    async def get_pause_request(self, instance_id: str) -> PauseRequest | None:
        return await asyncio.to_thread(self.sync.get_pause_request, instance_id)

    async def close(self) -> None:
        await asyncio.to_thread(self.sync.close)


class TestThroughSyncBackend(BackendConformance):
    @pytest.fixture
    async def backend(self, clock: ManualClock) -> AsyncIterator[AsyncOverSync]:
        inner = ObjectStoreBackend.from_url(f"memory://sync-{secrets.token_hex(6)}", clock=clock)
        async with AsyncOverSync(SyncBackend(inner)) as backend:
            yield backend


@pytest.fixture
def sync_backend() -> Iterator[SyncBackend]:
    with SyncBackend(InMemoryBackend()) as backend:
        yield backend


def _ready(instance_id: str) -> WorkflowSnapshot:
    snapshot = WorkflowSnapshot(instance_id, "flow-v1", initial_input=b"in")
    snapshot.update_position(AtTask("charge"))
    return snapshot


def test_same_methods_results_and_errors(sync_backend: SyncBackend) -> None:
    snapshot = _ready("order/1")
    version = sync_backend.save_snapshot(snapshot)
    assert snapshot.version == version
    assert sync_backend.list_snapshots() == ["order/1"]
    [task] = sync_backend.find_available_tasks("w1", 10)
    assert (task.instance_id, task.task_id, task.input) == ("order/1", "charge", b"in")
    claim = sync_backend.claim_task("order/1", "charge", "w1", TTL)
    assert claim is not None and claim.token == 1
    assert sync_backend.claim_task("order/1", "charge", "w2", TTL) is None
    with pytest.raises(ClaimLostError):
        sync_backend.release_task_claim("order/1", "charge", "w2")
    assert sync_backend.extend_task_claim("order/1", "charge", "w1", TTL).worker_id == "w1"
    sync_backend.save_task_result("order/1", "charge", b"paid", claim=claim)
    with pytest.raises(ConflictError):
        sync_backend.save_task_result("order/1", "charge", b"other")
    assert sync_backend.load_task_result("order/1", "charge") == b"paid"
    sync_backend.release_task_claim("order/1", "charge", "w1")
    with pytest.raises(ConflictError):
        sync_backend.save_snapshot(snapshot)  # stale version: the result moved it
    with pytest.raises(NotFoundError):
        sync_backend.load_snapshot("nope")
    with pytest.raises(InvalidIdentifierError):
        sync_backend.load_snapshot("bad\x00id")
    sync_backend.request_cancellation("order/1", "stop", "me")
    request = sync_backend.get_cancellation_request("order/1")
    assert request is not None and request.reason == "stop"
    assert sync_backend.check_and_cancel("order/1") is True
    sync_backend.clear_cancellation_request("order/1")
    assert sync_backend.get_cancellation_request("order/1") is None
    sync_backend.delete_snapshot("order/1")
    assert sync_backend.list_snapshots() == []


def test_create_claim_available_record_and_advance_and_conditional_delete() -> None:
    with SyncBackend.from_url(f"memory://sync-{secrets.token_hex(6)}") as backend:
        assert backend.supports_create
        backend.create_snapshot(_ready("order/1"))
        with pytest.raises(ConflictError):
            backend.create_snapshot(_ready("order/1"))
        backend.create_snapshot(_ready("order/2"))
        won = backend.claim_available("w1", 10, TTL, lambda instance_id, *_: instance_id == "order/1")
        assert [(task.instance_id, claim.worker_id) for task, claim in won] == [("order/1", "w1")]
        [(_, claim)] = won

        def finish(snapshot: WorkflowSnapshot) -> bool:
            snapshot.mark_completed(b"shipped")
            return True

        saved, ready = backend.record_and_advance(claim, b"paid", finish)
        assert saved.is_terminal and ready == []
        assert backend.load_task_result("order/1", "charge") == b"paid"
        with pytest.raises(ClaimLostError):
            backend.record_and_advance(replace(claim, token=claim.token - 1), b"paid", finish)
        stale = backend.load_snapshot("order/2")
        backend.save_snapshot(backend.load_snapshot("order/2"))
        with pytest.raises(ConflictError):
            backend.delete_snapshot("order/2", if_version=stale.version)
        backend.delete_snapshot("order/2", if_version=backend.load_snapshot("order/2").version)
        with pytest.raises(NotFoundError):
            backend.delete_snapshot("order/2", if_version=stale.version)
        assert backend.list_snapshots() == ["order/1"]


def test_conditional_delete_of_a_backend_without_it_is_a_type_error(sync_backend: SyncBackend) -> None:
    version = sync_backend.save_snapshot(_ready("order/1"))
    assert not sync_backend.supports_create
    with pytest.raises(TypeError):
        sync_backend.delete_snapshot("order/1", if_version=version)
    assert sync_backend.list_snapshots() == ["order/1"]


def test_refuses_calls_from_a_thread_running_a_loop(sync_backend: SyncBackend) -> None:
    async def inside() -> None:
        with pytest.raises(RuntimeError, match="would block"):
            sync_backend.list_snapshots()
        # From a worker thread it is fine.
        assert await asyncio.to_thread(sync_backend.list_snapshots) == []

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the refused coroutine is closed, not left unawaited
        asyncio.run(inside())


def test_closed_wrapper_refuses_calls() -> None:
    backend = SyncBackend(InMemoryBackend())
    backend.close()
    backend.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        backend.list_snapshots()


def test_concurrent_claims_from_many_threads_have_one_winner(sync_backend: SyncBackend) -> None:
    for i in range(20):
        sync_backend.save_snapshot(_ready(f"order/{i}"))
    wins: Counter[str] = Counter()
    start = threading.Barrier(8)

    def racer(worker: str) -> None:
        start.wait()
        for i in range(20):
            if sync_backend.claim_task(f"order/{i}", "charge", worker, TTL) is not None:
                wins[f"order/{i}"] += 1

    threads = [threading.Thread(target=racer, args=(f"w{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wins == {f"order/{i}": 1 for i in range(20)}


def test_interrupted_call_cancels_its_coroutine() -> None:
    assert threading.current_thread() is threading.main_thread()  # where SIGINT lands
    loop = BackgroundLoop()
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run(forever())
        assert cancelled.wait(5)
    finally:
        loop.close()


def test_s3_backend_from_many_threads_closes_cleanly(moto_s3: S3Endpoint) -> None:
    bucket = moto_s3.create_bucket("sync")
    with no_complaints():
        backend = SyncBackend.from_url(f"s3://{bucket}/s", **moto_s3.storage_options())
        backend.save_snapshot(_ready("order/1"))
        failures: list[str] = []

        def reader() -> None:
            for _ in range(20):
                try:
                    assert backend.load_snapshot("order/1").instance_id == "order/1"
                except Exception as exc:
                    failures.append(repr(exc))

        threads = [threading.Thread(target=reader) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert open_sessions() >= 1
        backend.close()
        assert open_sessions() == 0
    assert failures == []


def _in_child(check: Callable[[], bool], patience: float = 30.0) -> int | None:
    """Fork; in the child run ``check`` and exit 0 if it holds (1 if not, 2 if it raised).
    The child's exit code, or ``None`` if it still ran after ``patience`` seconds (then killed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        pid = os.fork()
    if pid == 0:
        code = 2
        try:
            code = 0 if check() else 1
        finally:
            os._exit(code)
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.timeout(120)
def test_s3_backend_made_before_fork_works_in_the_child_and_the_parent(moto_s3: S3Endpoint) -> None:
    # The child makes its own S3 clients on its own loop; the parent's pooled connections
    # (shared with the child by fork) are left alone there, so the parent goes on using them.
    bucket = moto_s3.create_bucket("sync-fork")
    with no_complaints():
        backend = SyncBackend.from_url(f"s3://{bucket}/s", **moto_s3.storage_options())
        backend.save_snapshot(_ready("parent"))
        assert open_sessions() >= 1

        def child() -> bool:
            backend.save_snapshot(_ready("child"))
            gc.collect()  # what the child inherited is not collected (and so not closed) either
            return backend.list_snapshots() == ["child", "parent"]

        assert _in_child(child) == 0
        for _ in range(5):
            assert backend.load_snapshot("parent").instance_id == "parent"
        assert backend.list_snapshots() == ["child", "parent"]
        backend.close()
        assert open_sessions() == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_loop_closed_before_fork_stays_closed_in_the_child() -> None:
    closed, open_ = BackgroundLoop(), BackgroundLoop()
    closed.close()

    async def pid() -> int:
        return os.getpid()

    def child() -> bool:
        try:
            closed.run(pid())
        except RuntimeError:
            pass
        else:
            return False
        works = open_.run(pid()) == os.getpid()
        open_.close()
        return works and open_.closed

    try:
        assert _in_child(child) == 0
        assert open_.run(pid()) == os.getpid()  # the parent's loop thread is still its own
    finally:
        open_.close()


def _double(x: int) -> int:
    return 2 * x


def _fail(x: Any) -> Any:
    raise ValueError("no")


def test_sync_client_submits_and_waits(sync_backend: SyncBackend) -> None:
    flow = Flow("sync-client").step(_double)
    client = SyncClient(sync_backend, [flow])
    instance_id = client.submit(flow, 21)
    assert client.status(instance_id).state == "in_progress"
    worker = Worker(sync_backend.backend, [flow], poll_interval=0.01)
    assert sync_backend.run(worker.run_until_idle()) == 1
    assert client.result(instance_id, timeout=5) == 42
    assert client.status(instance_id).output == 42

    failing = Flow("sync-client-fails").step(_fail)
    failed = client.submit(failing, 1)
    sync_backend.run(Worker(sync_backend.backend, [failing], poll_interval=0.01).run_until_idle())
    with pytest.raises(WorkflowFailedError):
        client.result(failed, timeout=5)
    with pytest.raises(NotFoundError):
        client.status("nope")


def test_sync_client_with_its_own_loop() -> None:
    flow = Flow("own-loop").step(_double)
    backend = InMemoryBackend()
    client = SyncClient(backend, [flow])
    try:
        instance_id = client.submit(flow, 1)
        assert client.cancel(instance_id, "not needed") is True
        assert client.status(instance_id).state == "cancelled"
    finally:
        client.close()
    assert client.loop.closed
