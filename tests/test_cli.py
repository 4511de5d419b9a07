"""The ``objstore-wfp`` command over a local-disk store: listings, maintenance, errors, demo."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from objstore_wfp import ObjectStoreBackend
from objstore_wfp.cli.main import main
from objstore_wfp.runtime import Client, Flow, Step, Worker

REPO_ROOT = Path(__file__).resolve().parents[1]


def hello(name: str) -> str:
    return f"hello {name}"


FLOW = Flow("greet").step(hello)


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A store with ``done`` (completed), ``waiting`` (claimed by worker-x) and ``fresh``."""
    url = str(tmp_path / "store")

    async def setup() -> None:
        async with ObjectStoreBackend.from_url(url) as backend:
            client = Client(backend, [FLOW])
            await client.submit(FLOW, "ada", instance_id="done")
            await Worker(backend, [FLOW], poll_interval=0.01).run_until_idle()
            await client.submit(FLOW, "bob", instance_id="waiting")
            await client.submit(FLOW, "cy", instance_id="fresh")
            await backend.claim_task("waiting", "hello", "worker-x", timedelta(minutes=5))
            await backend.claim_task("fresh", "expired-lock", "worker-y", timedelta(0))

    asyncio.run(setup())
    return url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_ls_lists_instances_with_state_and_position(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "ls", "--store", store)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["INSTANCE", "FLOW", "STATE", "POSITION", "UPDATED"]
    assert [line.split()[0] for line in lines[1:]] == ["done", "fresh", "waiting"]
    doc = run_json(capsys, "ls", "--store", store)
    states = {i["instance_id"]: (i["state"], i["position"]) for i in doc["instances"]}
    assert states == {
        "done": ("completed", "-"),
        "fresh": ("in_progress", "task hello"),
        "waiting": ("in_progress", "task hello"),
    }
    assert doc["instances"][0]["definition_hash"] == FLOW.definition_hash
    only = run_json(capsys, "ls", "--store", store, "--state", "completed")
    assert [i["instance_id"] for i in only["instances"]] == ["done"]


def test_show_gives_state_output_and_claims(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "show", "done", "--store", store)
    assert code == 0
    assert "state      completed" in out and 'output     "hello ada"' in out
    doc = run_json(capsys, "show", "waiting", "--store", store)
    assert doc["state"] == "in_progress" and doc["initial_input"] == "bob"
    assert [(c["task_id"], c["worker_id"], c["token"], c["live"]) for c in doc["claims"]] == [
        ("hello", "worker-x", 1, True)
    ]


def test_claims_lists_live_claims_and_all_with_expired(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    live = run_json(capsys, "claims", "--store", store)
    assert [(c["instance_id"], c["worker_id"]) for c in live["claims"]] == [("waiting", "worker-x")]
    every = run_json(capsys, "claims", "--store", store, "--all")
    assert [(c["instance_id"], c["live"]) for c in every["claims"]] == [("fresh", False), ("waiting", True)]
    code, out, _ = run(capsys, "claims", "--store", store)
    assert code == 0 and "worker-x" in out and "in " in out


def test_find_lists_available_tasks(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_json(capsys, "find", "--store", store)
    assert [(t["instance_id"], t["task_id"], t["input"]) for t in doc["tasks"]] == [("fresh", "hello", "cy")]
    code, out, _ = run(capsys, "find", "--store", store, "--limit", "0")
    assert code == 0 and out.strip() == "(none)"


def test_cancel_then_gc_and_repair(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "cancel", "fresh", "--store", store, "--reason", "test")
    assert code == 0 and out.strip() == "fresh: cancelled"
    assert run_json(capsys, "show", "fresh", "--store", store)["cancelled"]["reason"] == "test"
    code, _, err = run(capsys, "cancel", "done", "--store", store)
    assert code == 4 and err.count("\n") == 1 and err.startswith("objstore-wfp: error:")

    dry = run_json(capsys, "gc", "--store", store, "--older-than", "0s", "--dry-run")
    assert dry["deleted"] == ["done", "fresh"]
    assert run_json(capsys, "gc", "--store", store, "--older-than", "1d")["deleted"] == []
    assert run_json(capsys, "gc", "--store", store, "--older-than", "0")["deleted"] == ["done", "fresh"]
    assert [i["instance_id"] for i in run_json(capsys, "ls", "--store", store)["instances"]] == ["waiting"]
    assert run_json(capsys, "repair", "--store", store)["instances"] == 1


def test_probe_reports_enforced_conditions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "probed").mkdir()
    doc = run_json(capsys, "probe", str(tmp_path / "probed"))
    assert doc["create_if_absent"] and doc["compare_and_swap"]
    code, out, _ = run(capsys, "probe", "memory://cli-probe")
    assert code == 0 and "usable" in out


def test_show_lists_the_results_of_a_completed_instance_through_its_flow(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    unknown = run_json(capsys, "show", "done", "--store", store)
    assert unknown["results"] is None
    code, out, _ = run(capsys, "show", "done", "--store", store)
    assert code == 0 and "give --flow MODULE:ATTR" in out
    doc = run_json(capsys, "show", "done", "--store", store, "--flow", "tests.test_cli:FLOW")
    assert doc["results"] == {"hello": "hello ada"}
    code, out, _ = run(capsys, "show", "done", "--store", store, "--flow", "tests.test_cli:FLOW")
    assert code == 0 and 'hello  "hello ada"' in out


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["show", "missing"], 3, "no snapshot for instance 'missing'"),
        (["show", "a\x01b"], 2, "control character"),
        (["ls", "--store", "bogus://x"], 1, "no store for bogus://"),
        (["ls", "--store", "/nonexistent/objstore-wfp"], 3, "no store at"),
        (["ls", "-o", "novalue"], 2, "KEY=VALUE"),
        (["gc", "--older-than", "soon"], 2, "duration"),
        (["worker", "--flow", "no_such_module:FLOW"], 2, "cannot import"),
        (["worker", "--flow", "tests.test_cli:hello"], 2, "'hello' is a function, not a Flow"),
        (["worker", "--flow", "tests.test_cli:NOPE"], 2, "module 'tests.test_cli' has no attribute 'NOPE'"),
        (["probe", "nowhere://bucket"], 1, "no store for nowhere://"),
        (["demo", "--store", "memory://demo"], 2, "memory:// lives inside one process"),
        (["demo", "--workers", "0"], 2, "--workers must be >= 1"),
        (["demo", "--workers", "1"], 2, "give --workers 2 or more, or --no-kill"),
    ],
)
def test_user_mistakes_give_one_line_and_a_nonzero_exit(
    store: str, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, message: str
) -> None:
    if "--store" not in argv and argv[0] not in ("probe", "demo"):
        argv = [*argv, "--store", store]
    got, out, err = run(capsys, *argv)
    assert got == code
    assert err.count("\n") == 1 and err.startswith("objstore-wfp: error:") and message in err
    assert "Traceback" not in err and out == ""


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "frobnicate")
    assert code == 2 and out == ""
    assert err.startswith("objstore-wfp: error: argument COMMAND: invalid choice") and err.count("\n") == 1


def test_python_dash_m_runs_the_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "objstore_wfp", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("objstore-wfp ")


@pytest.mark.slow
def test_demo_runs_to_completion_with_a_takeover_and_leaves_no_process(tmp_path: Path) -> None:
    store = tmp_path / "demo-store"
    command = [sys.executable, "-m", "objstore_wfp", "demo", "--store", str(store), "--json"]
    command += ["--instances", "4", "--workers", "3", "--lease", "1.5", "--work", "0.3", "--timeout", "90"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["instances_completed"] == 4 and not summary["problems"]
    assert summary["tasks_recorded"] == 4 * 6
    assert summary["killed"] is not None and summary["killed"]["taken_over"]
    assert all(t["token"] >= 2 for t in summary["killed"]["taken_over"].values())
    assert summary["takeovers"] >= 1 and summary["duplicate_executions"] >= 1
    assert summary["store_requests_per_task"] > 0
    for pid in summary["worker_pids"]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "SIGKILL" in result.stderr and "in the middle of" in result.stderr and "took over" in result.stderr


def test_worker_command_runs_flows_from_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "myflows.py").write_text(
        "from objstore_wfp.runtime import Flow\n"
        "def shout(text): return text.upper()\n"
        "FLOW = Flow('shout').step(shout)\n"
    )
    store = str(tmp_path / "store")
    flow = Flow("shout").step(Step("shout", str.upper))

    async def submit() -> None:
        async with ObjectStoreBackend.from_url(store) as backend:
            await Client(backend).submit(flow, "hi", instance_id="s-1")

    asyncio.run(submit())
    script = Path(sys.executable).parent / "objstore-wfp"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "objstore_wfp"]
    command += ["worker", "--store", store, "--flow", "myflows:FLOW", "--until-idle", "--poll", "0.05"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "completed 1 task(s)" in done.stdout
    again = subprocess.run([*command, "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert json.loads(again.stdout)["completed"] == 0

    async def result() -> Any:
        async with ObjectStoreBackend.from_url(store) as backend:
            return await Client(backend).result("s-1")

    assert asyncio.run(result()) == "HI"
