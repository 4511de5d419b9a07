"""``examples/aws_lambda/``, driven the way Lambda drives it, against moto_server.

An execution environment is a process (``lambda_runtime.py``) that imports the handler once
(cold start) and then serves invocation after invocation (warm reuse); several environments
serve concurrent invocations; a timeout kill is a SIGKILL in the middle of a task. Whatever
happens, every workflow completes and every task's result is recorded exactly once.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from objstore_wfp.runtime import Flow, SyncClient
from objstore_wfp.sync import SyncBackend
from tests.servers import REPO_ROOT
from tests.servers.s3 import REGION, S3Endpoint

EXAMPLE = REPO_ROOT / "examples" / "aws_lambda"
HERE = Path(__file__).resolve().parent
#: Seconds one invocation may take before the test gives up on it.
INVOCATION_TIMEOUT = 60.0
#: Seconds of lease in the kill test (the others use 30: no task there may change hands).
LEASE = 3


class Environment:
    """One Lambda execution environment: a process serving invocations one at a time."""

    def __init__(self, package: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "lambda_runtime.py"), str(package), "handler.handler"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.cold_start = self._answer()["ready"]

    def send(self, event: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(event) + "\n")
        self.process.stdin.flush()

    def _answer(self) -> dict[str, Any]:
        stdout = self.process.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], INVOCATION_TIMEOUT)
        line = stdout.readline() if ready else ""
        if not line:
            self.process.kill()
            raise AssertionError(f"no answer from the environment; stderr: {self.stop()[-2000:]}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def result(self) -> dict[str, Any]:
        """The answer to the invocation sent last."""
        answer = self._answer()
        assert "error" not in answer, answer
        result: dict[str, Any] = answer["result"]
        return result

    def invoke(self, event: dict[str, Any] | None = None) -> dict[str, Any]:
        self.send(event or {})
        return self.result()

    def stop(self) -> str:
        """Retire the environment (end of input); return what it logged."""
        _, stderr = self.process.communicate(timeout=INVOCATION_TIMEOUT)
        return stderr

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.communicate(timeout=INVOCATION_TIMEOUT)


def quiet(stderr: str) -> bool:
    """Nothing went wrong that only the logs would tell: no warnings, errors or tracebacks."""
    return not any(word in stderr for word in ("Unclosed", "Traceback", "ERROR", "Warning"))


@pytest.fixture
def store(moto_s3: S3Endpoint) -> str:
    return f"s3://{moto_s3.create_bucket('lambda')}/workflows"


@pytest.fixture
def environ(moto_s3: S3Endpoint, store: str, tmp_path: Path) -> dict[str, str]:
    """A Lambda function's environment: configuration variables and credentials."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO_ROOT),
        "WFP_STORE": store,
        "WFP_LEASE_SECONDS": "30",
        "WFP_CONCURRENCY": "2",
        "WFP_TEST_LOG": str(tmp_path / "executions.log"),
        "AWS_ENDPOINT_URL": moto_s3.url,
        "AWS_ACCESS_KEY_ID": moto_s3.key,
        "AWS_SECRET_ACCESS_KEY": moto_s3.secret,
        "AWS_DEFAULT_REGION": REGION,
    }


@pytest.fixture
def client(moto_s3: S3Endpoint, store: str) -> Iterator[tuple[SyncBackend, SyncClient]]:
    """The submitting side (an API, a cron job): the sync client."""
    with SyncBackend.from_url(store, **moto_s3.storage_options()) as backend:
        yield backend, SyncClient(backend)


def _package(tmp_path: Path, flows: Path) -> Path:
    """A deployment package: the example's handler with the given flows module."""
    package = tmp_path / "package"
    package.mkdir()
    shutil.copy(EXAMPLE / "handler.py", package / "handler.py")
    shutil.copy(flows, package / "flows.py")
    return package


def _test_flow() -> Flow:
    sys.path.insert(0, str(HERE))
    try:
        from lambda_flows import FLOWS
    finally:
        sys.path.remove(str(HERE))
    flow: Flow = FLOWS[0]
    return flow


def _executions(environ: dict[str, str]) -> Counter[tuple[str, int]]:
    lines = Path(environ["WFP_TEST_LOG"]).read_text().splitlines()
    return Counter((json.loads(line)["task"], json.loads(line)["job"]) for line in lines)


def _invoke_until_done(environments: list[Environment], client: SyncClient, ids: list[str]) -> int:
    """Invoke every environment at once, round after round, until every workflow is finished;
    return the number of rounds."""
    deadline = time.monotonic() + 120
    rounds = 0
    while not all(client.status(i).is_terminal for i in ids):
        assert time.monotonic() < deadline, "workflows did not finish"
        for environment in environments:
            environment.send({})
        for environment in environments:
            environment.result()
        rounds += 1
    return rounds


def test_cold_start_and_warm_invocations_of_the_shipped_example(
    tmp_path: Path, environ: dict[str, str], client: tuple[SyncBackend, SyncClient]
) -> None:
    sys.path.insert(0, str(EXAMPLE))
    try:
        from flows import ORDER
    finally:
        sys.path.remove(str(EXAMPLE))
    _, submitter = client
    ids = [submitter.submit(ORDER, {"id": n, "items": [n, 2]}) for n in range(1, 6)]
    environment = Environment(_package(tmp_path, EXAMPLE / "flows.py"), environ)
    results = [environment.invoke() for _ in range(12)]
    assert len({r["worker"] for r in results}) == 1  # one worker, reused warm
    assert sum(r["completed"] for r in results) == 5 * 4
    assert environment.invoke({"sweep": True})["swept"] == 0
    for n, instance_id in enumerate(ids, start=1):
        assert submitter.result(instance_id, timeout=5) == {"total": 10 * (n + 2), "ship": n <= 5}
    stderr = environment.stop()
    assert environment.process.returncode == 0
    assert quiet(stderr), stderr[-2000:]
    print(f"\ncold start (import of the handler): {environment.cold_start:.2f} s")


def test_a_killed_invocation_is_taken_over_after_its_lease(
    tmp_path: Path, environ: dict[str, str], client: tuple[SyncBackend, SyncClient]
) -> None:
    backend, submitter = client
    environ = {**environ, "WFP_LEASE_SECONDS": str(LEASE)}
    flow = _test_flow()
    instance_id = submitter.submit(flow, {"id": 7, "hang_once": True})
    doomed = Environment(_package(tmp_path, HERE / "lambda_flows.py"), environ)
    doomed.send({})
    deadline = time.monotonic() + INVOCATION_TIMEOUT
    while not Path(f"{environ['WFP_TEST_LOG']}.7.hung").exists():
        assert time.monotonic() < deadline, "the first task never started"
        time.sleep(0.05)
    doomed.kill()  # the platform's timeout kill, mid-task
    killed_at = time.monotonic()

    successor = Environment(tmp_path / "package", environ)
    completed = 0
    while not submitter.status(instance_id).is_terminal:
        assert time.monotonic() - killed_at < INVOCATION_TIMEOUT, "never taken over"
        completed += successor.invoke()["completed"]
        time.sleep(0.2)
    assert time.monotonic() - killed_at >= LEASE * 0.9  # not before the lease expired
    assert submitter.result(instance_id) == 71
    assert completed == 2
    assert _executions(environ) == {("first", 7): 2, ("second", 7): 1}  # at least once...
    assert backend.load_task_result(instance_id, "first") is not None  # ...recorded once
    assert quiet(successor.stop())


def test_many_concurrent_invocations(
    tmp_path: Path, environ: dict[str, str], client: tuple[SyncBackend, SyncClient]
) -> None:
    _, submitter = client
    flow = _test_flow()
    ids = [submitter.submit(flow, {"id": n}) for n in range(12)]
    package = _package(tmp_path, HERE / "lambda_flows.py")
    environments = [Environment(package, environ) for _ in range(4)]
    _invoke_until_done(environments, submitter, ids)
    for n, instance_id in enumerate(ids):
        assert submitter.result(instance_id) == 10 * n + 1
    # No kill and leases far longer than a task: every task ran exactly once.
    assert _executions(environ) == {(task, n): 1 for n in range(12) for task in ("first", "second")}
    for environment in environments:
        assert quiet(environment.stop())
