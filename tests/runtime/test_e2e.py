"""End to end: real worker processes (``objstore-wfp worker``) sharing workflows in a real store.

Every test runs against each store target of ``E2E_TARGETS``: local disk, and S3 on moto_server
(skipped when moto_server is missing unless ``OBJSTORE_WFP_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from objstore_wfp import Cancelled, ObjectStoreBackend
from objstore_wfp.runtime import Client
from tests.backends import StoreTarget, local_store_target  # noqa: F401 - a fixture E2E_TARGETS names
from tests.runtime.e2e_flows import FLOW, HANG_ENV, expected
from tests.servers.s3 import S3Endpoint

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
FLOW_SPEC = "tests.runtime.e2e_flows:FLOW"


#: Where the end-to-end tests run: fixtures that yield a fresh ``tests.backends.StoreTarget``.
#: Extension point: add the name of any such fixture (e.g. ``"gcs_store_target"``) to run every
#: test of this module on that store too; its options reach the worker processes as ``-o``.
E2E_TARGETS = [pytest.param("local_store_target", id="local"), pytest.param("moto_e2e_target", id="moto")]


@pytest.fixture
def moto_e2e_target(moto_s3: S3Endpoint) -> StoreTarget:
    """A fresh bucket on moto_server."""
    return StoreTarget("moto", f"s3://{moto_s3.create_bucket('e2e')}/wf", moto_s3.storage_options())


@pytest.fixture(params=E2E_TARGETS)
def target(request: pytest.FixtureRequest) -> StoreTarget:
    found: StoreTarget = request.getfixturevalue(request.param)
    if not found.shared_between_processes:
        pytest.skip(f"{found.name}: every process sees its own store")
    return found


def cli_options(target: StoreTarget) -> list[str]:
    """The target's storage options as ``-o KEY=VALUE`` arguments (non-strings as JSON)."""
    args: list[str] = []
    for key, value in target.options.items():
        args += ["-o", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    return args


class Workers:
    """Starts ``objstore-wfp worker`` processes and kills any still running at teardown."""

    def __init__(self, target: StoreTarget, folder: Path) -> None:
        self.target = target
        self.folder = folder
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        command = [
            sys.executable, "-m", "objstore_wfp", "worker",
            "--store", self.target.url, *cli_options(self.target), "--flow", FLOW_SPEC,
            "--worker-id", name, "--events", str(self.events_path(name)),
            "--poll", "0.1", "--exit-with-parent", *extra,
        ]  # fmt: skip
        with (self.folder / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env={**os.environ, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.started.append(process)
        return process

    def events_path(self, name: str) -> Path:
        return self.folder / f"{name}.jsonl"

    def events(self, name: str) -> list[dict[str, Any]]:
        path = self.events_path(name)
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def stop(self, process: subprocess.Popen[bytes]) -> int:
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout=30)

    def cleanup(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def workers(target: StoreTarget, tmp_path: Path) -> Iterator[Workers]:
    spawner = Workers(target, tmp_path)
    try:
        yield spawner
    finally:
        spawner.cleanup()


@pytest.fixture
async def backend(target: StoreTarget) -> AsyncIterator[ObjectStoreBackend]:
    backend = target.backend()
    async with backend:
        yield backend


async def eventually(check: Any, timeout: float, what: str) -> Any:
    """Poll ``await check()`` until it returns something truthy (bounded)."""
    for _ in range(int(timeout / 0.1)):
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def all_terminal(backend: ObjectStoreBackend, ids: list[str]) -> bool:
    return all([(await backend.load_snapshot(i)).is_terminal for i in ids])


async def test_worker_processes_complete_a_batch_of_fork_join_workflows(
    backend: ObjectStoreBackend, workers: Workers
) -> None:
    names = [f"w{k}" for k in range(3)]
    processes = [workers.start(name, "--concurrency", "2", "--lease", "10") for name in names]

    async def all_ready() -> bool:
        return all(any(e["kind"] == "ready" for e in workers.events(name)) for name in names)

    # Work appears only once every worker polls, so that all of them get a share.
    await eventually(all_ready, 60, "the workers to start")
    client = Client(backend, [FLOW])
    ids = {await client.submit(FLOW, n, instance_id=f"batch/{n}"): n for n in range(8)}
    await eventually(lambda: all_terminal(backend, list(ids)), 90, "every workflow to finish")
    for instance_id, n in ids.items():
        assert await client.result(instance_id) == expected(n)
    assert [workers.stop(p) for p in processes] == [0, 0, 0], "SIGTERM is a graceful, clean exit"
    events = [e for name in names for e in workers.events(name)]
    recorded = [(e["instance_id"], e["task_id"]) for e in events if e["kind"] == "recorded"]
    assert len(recorded) == len(set(recorded)) == len(ids) * len(FLOW.task_names())
    assert len({e["worker_id"] for e in events if e["kind"] == "recorded"}) >= 2
    assert sorted(e["worker_id"] for e in events if e["kind"] == "stopped") == names


async def test_a_worker_killed_mid_task_is_taken_over_after_its_lease(
    backend: ObjectStoreBackend, workers: Workers
) -> None:
    client = Client(backend, [FLOW])
    instance_id = await client.submit(FLOW, 3, instance_id="kill-me")
    doomed = workers.start("doomed", "--concurrency", "1", "--lease", "1.5", env={HANG_ENV: "1"})

    async def hanging() -> bool:
        return any(e["kind"] == "started" and e["task_id"] == "hold" for e in workers.events("doomed"))

    await eventually(hanging, 60, "the doomed worker to start the hanging task")
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    rescuer = workers.start("rescuer", "--concurrency", "1", "--lease", "1.5")
    await eventually(lambda: all_terminal(backend, [instance_id]), 60, "the workflow to finish")
    assert await client.result(instance_id) == expected(3)
    assert workers.stop(rescuer) == 0
    takeover = [e for e in workers.events("rescuer") if e["kind"] == "claimed" and e["task_id"] == "hold"]
    assert [e["token"] for e in takeover] == [2]
    assert not [e for e in workers.events("doomed") if e["kind"] == "recorded" and e["task_id"] == "hold"]


async def test_a_cancelled_workflow_stops(backend: ObjectStoreBackend, workers: Workers) -> None:
    instance_id = await Client(backend, [FLOW]).submit(FLOW, 1, instance_id="cancel-me")
    worker = workers.start("w", "--concurrency", "1", "--lease", "1.5", env={HANG_ENV: "1"})

    async def hanging() -> bool:
        return any(e["kind"] == "started" and e["task_id"] == "hold" for e in workers.events("w"))

    await eventually(hanging, 60, "the worker to start the hanging task")
    await backend.request_cancellation(instance_id, "not needed", "e2e")
    snapshot = await eventually(
        lambda: _cancelled(backend, instance_id), 30, "the worker to apply the cancellation at a heartbeat"
    )
    assert snapshot.state.interrupted_at_task == "hold"

    async def stopped() -> bool:
        return any(e["kind"] == "cancelled" and e["task_id"] == "hold" for e in workers.events("w"))

    await eventually(stopped, 30, "the worker to stop the task")
    await asyncio.sleep(0.5)
    assert await backend.find_available_tasks("probe", 10) == []
    assert not [
        e for e in workers.events("w") if e["kind"] == "started" and e["task_id"] in ("join", "finish")
    ]
    assert workers.stop(worker) == 0


async def _cancelled(backend: ObjectStoreBackend, instance_id: str) -> Any:
    snapshot = await backend.load_snapshot(instance_id)
    return snapshot if isinstance(snapshot.state, Cancelled) else None


async def test_serverless_run_once_calls_in_fresh_processes_complete_workflows(
    backend: ObjectStoreBackend, workers: Workers
) -> None:
    client = Client(backend, [FLOW])
    ids = {await client.submit(FLOW, n, instance_id=f"lambda-{n}"): n for n in range(3)}
    invocations = 0
    for invocations in range(1, 31):
        process = workers.start(f"invocation-{invocations}", "--once", "--concurrency", "4")
        assert process.wait(timeout=60) == 0, workers.log(f"invocation-{invocations}")
        if await all_terminal(backend, list(ids)):
            break
    for instance_id, n in ids.items():
        assert await client.result(instance_id) == expected(n)
    # About five: split, the 6 branch tasks (4 per invocation), join, finish; a little slack.
    assert invocations <= 8
