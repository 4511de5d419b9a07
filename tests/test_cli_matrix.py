"""Every ``objstore-wfp`` subcommand over the ways users call it: no ``--store`` in an empty
folder, ``$OBJSTORE_WFP_STORE``, a missing or mistyped path, bad URLs, ``--json``, bad ids and
corrupt objects. Each call must end with the documented exit code and either its normal output
or one line on stderr (one JSON object with ``--json``), never a traceback; a mistyped local path
is never created. Most calls run ``main()`` in-process; a representative part runs the installed
command as a real subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from objstore_wfp import ObjectStoreBackend
from objstore_wfp.cli.main import EXIT_CODES_HELP, ExitCode, main
from objstore_wfp.cli.store import STORE_ENV
from objstore_wfp.runtime import Client, Worker
from tests.servers.s3 import S3Endpoint
from tests.test_cli import FLOW

REPO_ROOT = Path(__file__).resolve().parents[1]
FLOW_SPEC = "tests.test_cli:FLOW"

#: The arguments each store command needs besides the store, for a call that succeeds.
STORE_COMMANDS: dict[str, list[str]] = {
    "ls": [],
    "show": ["done"],
    "claims": [],
    "find": [],
    "cancel": ["waiting"],
    "pause": ["waiting"],
    "unpause": ["waiting"],
    "signal": ["waiting", "go", "--payload", '{"ok": true}'],
    "gc": ["--older-than", "0", "--dry-run"],
    "repair": [],
    "worker": ["--flow", FLOW_SPEC, "--until-idle", "--quiet", "--poll", "0.01"],
}
ERROR_LINE = re.compile(r"^objstore-wfp( [a-z]+)?: error: \S.*\n$")
WARNING_LINE = re.compile(r"^objstore-wfp: warning: \S.*$")


@dataclass
class Case:
    """One call. ``{store}``, ``{corrupt}`` and ``{missing}`` in ``argv`` and ``env`` are
    replaced by a good store, a store holding random bytes, and a path that does not exist."""

    argv: list[str]
    code: int
    #: In the error message (failures) or stdout (successes).
    expect: str = ""
    env: str | None = None
    #: A store named ./wfp-data in the working folder.
    default_store: bool = False
    #: Warnings on stderr are allowed (a store with unreadable objects).
    warns: bool = False
    id: str = field(default="", compare=False)


def _cases() -> list[Case]:
    cases: list[Case] = []
    for command, tail in STORE_COMMANDS.items():

        def add(
            label: str, argv: list[str], code: int, expect: str = "", command: str = command, **kw: Any
        ) -> None:
            cases.append(Case([command, *argv], code, expect, id=f"{command}-{label}", **kw))

        add(
            "no-store-empty-folder", tail, 3, "no store at ./wfp-data: the folder does not exist (the default"
        )
        add("default-folder-present", tail, 0, default_store=True)
        add("env", tail, 0, env="{store}")
        add("env-missing", tail, 3, f"(check ${STORE_ENV})", env="{missing}")
        add("missing-path", [*tail, "--store", "{missing}"], 3, "no store at")
        add("mistyped-path", [*tail, "--store", "{store}x"], 3, "(check --store)")
        add("file-url-missing", [*tail, "--store", "file://{missing}"], 3, "no store at")
        for url in ("s3:///p", "gs:///p", "az:///p", "s3://"):
            add(f"no-bucket-{url}", [*tail, "--store", url], 2, "names no")
        add("one-slash-url", [*tail, "--store", "s3:/bucket/p"], 2, "write s3://... (two slashes)")
        add("empty-url", [*tail, "--store", ""], 2, "non-empty")
        add("file-url-no-folder", [*tail, "--store", "file://"], 2, "names no folder")
        add("unknown-scheme", [*tail, "--store", "bogus://x"], 1, "no store for bogus://")
        add("bad-option", [*tail, "--store", "{store}", "-o", "novalue"], 2, "KEY=VALUE")
        add("unknown-flag", [*tail, "--store", "{store}", "--frob"], 2, f"objstore-wfp {command} --help")
        add("corrupt", [*tail, "--store", "{corrupt}"], 0, warns=True)
    for command in ("show", "cancel", "pause", "unpause"):
        for label, bad in (("control-char", "a\x01b"), ("empty", ""), ("too-long", "x" * 600)):
            cases.append(
                Case([command, bad, "--store", "{store}"], 2, "instance_id", id=f"{command}-id-{label}")
            )
        cases.append(Case([command, "nope", "--store", "{store}"], 3, "'nope'", id=f"{command}-unknown-id"))
        cases.append(
            Case([command, "fresh", "--store", "{corrupt}"], 1, "in store ", id=f"{command}-corrupt-instance")
        )
        cases.append(Case([command], 2, "required: instance_id", id=f"{command}-no-id"))
    for label, bad in (("control-char", "a\x01b"), ("empty", "")):
        cases.append(
            Case(["signal", bad, "go", "--store", "{store}"], 2, "instance_id", id=f"signal-id-{label}")
        )
        cases.append(
            Case(["signal", "waiting", bad, "--store", "{store}"], 2, "name", id=f"signal-name-{label}")
        )
    cases += [
        Case(["signal", "nope", "go", "--store", "{store}"], 3, "'nope'", id="signal-unknown-id"),
        Case(["signal", "done", "go", "--store", "{store}"], 4, "done", id="signal-completed"),
        Case(["signal", "fresh", "go", "--store", "{corrupt}"], 1, "in store ", id="signal-corrupt-instance"),
        Case(["signal", "waiting", "--store", "{store}"], 2, "required: name", id="signal-no-name"),
        Case(
            ["signal", "waiting", "go", "--payload", "{oops", "--store", "{store}"],
            2,
            "--payload must be JSON",
            id="signal-bad-payload",
        ),
        Case(["pause", "done", "--store", "{store}"], 4, "done", id="pause-completed"),
        Case(
            ["pause", "waiting", "--store", "{store}"], 0, "waiting: paused (paused from the", id="pause-says"
        ),
        Case(["unpause", "waiting", "--store", "{store}"], 0, "waiting: was not paused", id="unpause-says"),
        Case(
            ["signal", "waiting", "go", "--store", "{store}"], 0, "waiting: sent signal go", id="signal-says"
        ),
        Case(["ls", "--store", "{corrupt}"], 0, "unreadable: fresh: snapshots/", id="ls-corrupt-says-which"),
        Case(
            ["claims", "--instance", "a\x01b", "--store", "{store}"],
            2,
            "control character",
            id="claims-bad-id",
        ),
        Case(["find", "--limit", "-1", "--store", "{store}"], 2, "limit", id="find-negative-limit"),
        Case(["find", "--limit", "many", "--store", "{store}"], 2, "invalid int", id="find-limit-not-int"),
        Case(["ls", "--state", "bogus", "--store", "{store}"], 2, "invalid choice", id="ls-bad-state"),
        Case(["gc", "--older-than", "soon", "--store", "{store}"], 2, "duration", id="gc-bad-age"),
        Case(["repair", "--grace=-1m", "--store", "{store}"], 2, "duration", id="repair-bad-grace"),
        Case(
            ["show", "waiting", "--flow", "tests.test_cli:NOPE", "--store", "{store}"],
            2,
            "no attribute 'NOPE'",
            id="show-flow-no-attribute",
        ),
        Case(["worker", "--store", "{store}"], 2, "required: --flow", id="worker-no-flow"),
        Case(
            ["worker", "--flow", "tests.test_cli:NOPE", "--store", "{store}"],
            2,
            "module 'tests.test_cli' has no attribute 'NOPE'",
            id="worker-flow-no-attribute",
        ),
        Case(
            ["worker", "--flow", "nomodule_xyz:F", "--store", "{store}"],
            2,
            "cannot import",
            id="worker-no-module",
        ),
        Case(
            ["worker", "--flow", "tests", "--store", "{store}"],
            2,
            "package.module:attribute",
            id="worker-flow-form",
        ),
        Case(
            ["worker", *STORE_COMMANDS["worker"], "--concurrency", "0", "--store", "{store}"],
            2,
            "--concurrency",
            id="worker-concurrency-0",
        ),
        Case(
            ["worker", *STORE_COMMANDS["worker"], "--max-poll", "0.001", "--store", "{store}"],
            2,
            "--max-poll must be at least --poll",
            id="worker-max-poll-below-poll",
        ),
        # probe takes its store as an argument and creates no folder either.
        Case(["probe"], 2, "required: URL", id="probe-no-url"),
        Case(["probe", "{store}"], 0, "usable", id="probe-folder"),
        Case(["probe", "{missing}"], 3, "no store at", id="probe-missing-path"),
        Case(["probe", "{store}x"], 3, "no store at", id="probe-mistyped-path"),
        Case(["probe", "s3:///p"], 2, "names no bucket", id="probe-no-bucket"),
        Case(["probe", "bogus://x"], 1, "no store for bogus://", id="probe-unknown-scheme"),
        Case(
            ["probe", "{store}", "--store", "{store}"],
            2,
            "unrecognized arguments: --store",
            id="probe-store-flag",
        ),
        # The demo's quick refusals (its runs are in test_cli.py and below).
        Case(["demo", "--workers", "1"], 2, "--workers 2 or more, or --no-kill", id="demo-one-worker"),
        Case(["demo", "--store", "s3:///p"], 2, "names no bucket", id="demo-no-bucket"),
        Case(["demo", "--store", "memory://x"], 2, "memory://", id="demo-memory"),
        Case(
            ["demo", "--store", "{store}", "--instances", "3"], 4, "give --replace", id="demo-existing-orders"
        ),
        Case(["demo", "--lease", "0"], 2, "--lease", id="demo-zero-lease"),
        # Bad usage before any command.
        Case([], 2, "required: COMMAND", id="no-command"),
        Case(["frobnicate"], 2, "invalid choice", id="unknown-command"),
    ]
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A good store (``done`` completed, ``waiting`` claimed by worker-x, ``fresh``, ``order-001``)
    and a copy where ``fresh``'s snapshot, ``waiting``'s claim and stray objects are random bytes."""
    root = tmp_path_factory.mktemp("cli-matrix")
    good = root / "good"

    async def setup() -> None:
        async with ObjectStoreBackend.from_url(str(good)) as backend:
            client = Client(backend, [FLOW])
            await client.submit(FLOW, "ada", instance_id="done")
            await Worker(backend, [FLOW], poll_interval=0.01).run_until_idle()
            await client.submit(FLOW, "bob", instance_id="waiting")
            await client.submit(FLOW, "cy", instance_id="fresh")
            await client.submit(FLOW, "dee", instance_id="order-001")
            await backend.claim_task("waiting", "hello", "worker-x", timedelta(minutes=5))

    asyncio.run(setup())
    corrupt = root / "corrupt"
    shutil.copytree(good, corrupt)
    noise = bytes(range(256)) * 2  # not UTF-8, not JSON
    (corrupt / "snapshots" / "fresh.json").write_bytes(noise)
    (corrupt / "claims" / "waiting" / "hello.json").write_bytes(noise)
    (corrupt / "snapshots" / "stray.json").write_bytes(b"")
    (corrupt / "stray-at-root").write_bytes(noise)
    (corrupt / "snapshots" / os.fsdecode(b"bad-name-\xff.json")).write_bytes(noise)  # not a UTF-8 name
    return good, corrupt


@pytest.fixture
def places(templates: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Fresh copies of the stores, an empty working folder, no store variable."""
    stores = tmp_path / "stores"
    for template in templates:
        shutil.copytree(template, stores / template.name)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv(STORE_ENV, raising=False)
    return {
        "store": str(stores / "good"),
        "corrupt": str(stores / "corrupt"),
        "missing": str(tmp_path / "no" / "such"),
    }


def _fill(text: str, places: dict[str, str]) -> str:
    for name, value in places.items():
        text = text.replace(f"{{{name}}}", value)
    return text


def check_outcome(code: int, out: str, err: str, case: Case, as_json: bool) -> None:
    """The documented exit code; on failure nothing on stdout and exactly one error line (or
    JSON object) on stderr; on success, stderr holds at most warnings."""
    assert "Traceback" not in out + err
    assert code == case.code, f"exit {code}, expected {case.code}\nstdout: {out}\nstderr: {err}"
    if code != 0:
        assert out == ""
        assert err.endswith("\n") and err.count("\n") == 1, err
        if as_json:
            doc = json.loads(err)
            assert set(doc) == {"error", "type", "exit_code"} and doc["exit_code"] == code
            assert case.expect in doc["error"]
        else:
            assert ERROR_LINE.match(err), err
            assert case.expect in err
        return
    warnings = err.splitlines()
    if as_json:
        json.loads(out)
        assert all(set(json.loads(line)) == {"warning"} for line in warnings), err
    else:
        assert case.expect in out
        assert all(WARNING_LINE.match(line) for line in warnings), err
    assert case.warns or not warnings, err


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cli_matrix(
    case: Case,
    as_json: bool,
    places: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [_fill(a, places) for a in case.argv] + (["--json"] if as_json else [])
    if case.env is not None:
        monkeypatch.setenv(STORE_ENV, _fill(case.env, places))
    if case.default_store:
        shutil.copytree(places["store"], "wfp-data")
    code = main(argv)
    out, err = capsys.readouterr()
    if as_json and case.code == 0 and case.expect:
        case = Case(case.argv, case.code, warns=case.warns)  # text expectations are about tables
    check_outcome(code, out, err, case, as_json)
    # Nothing was created for a path that does not exist, nor in the empty working folder.
    assert not Path(places["missing"]).parent.exists()
    assert not Path(places["store"] + "x").exists()
    if not case.default_store:
        assert os.listdir(".") == []


def test_every_subcommand_has_a_description_and_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    code, (top, _) = main(["--help"]), capsys.readouterr()
    assert code == 0 and "exit codes:" in top
    commands = re.findall(r"^    ([a-z]+)\s", top, re.MULTILINE)
    assert set(commands) == {*STORE_COMMANDS, "probe", "demo"}
    for command in commands:
        assert main([command, "--help"]) == 0
        text = capsys.readouterr().out
        description = text.split("\n\n")[1]
        assert description[0].isupper() and description.rstrip().endswith("."), (command, description)
        assert EXIT_CODES_HELP in text
        assert ("--store" in text) == (command != "probe")


def test_the_documented_exit_codes_are_the_real_ones() -> None:
    docs = (REPO_ROOT / "docs" / "runtime.md").read_text()
    table = dict(re.findall(r"^\| `(\d+)` \| (\w[^|]*?) \|", docs, re.MULTILINE))
    assert {int(k) for k in table} == {int(c) for c in ExitCode}
    listed = {int(m) for m in re.findall(r"^  (\d+) ", EXIT_CODES_HELP, re.MULTILINE)}
    assert listed == {int(c) for c in ExitCode}


def test_an_internal_error_is_one_line_with_its_own_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A bug in a command still ends in one line (the traceback on request), not in a crash."""
    from objstore_wfp.cli import commands

    async def broken(args: object) -> int:
        raise KeyError("boom")

    monkeypatch.setattr(commands, "cmd_find", broken)
    assert main(["find", "--store", str(tmp_path)]) == ExitCode.INTERNAL
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error" in err and "KeyError: 'boom'" in err
    monkeypatch.setenv("OBJSTORE_WFP_DEBUG", "1")
    assert main(["find", "--store", str(tmp_path), "--json"]) == ExitCode.INTERNAL
    err = capsys.readouterr().err
    assert "Traceback" in err and json.loads(err.splitlines()[-1])["type"] == "KeyError"


def _command() -> list[str]:
    script = Path(sys.executable).parent / "objstore-wfp"
    return [str(script)] if script.exists() else [sys.executable, "-m", "objstore_wfp"]


def _run(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != STORE_ENV}
    # This checkout, not whichever one the virtualenv was installed from.
    environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), environ.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    return subprocess.run(
        [*_command(), *argv], cwd=cwd, env={**environ, **env}, capture_output=True, text=True, timeout=60
    )


SUBPROCESS_CASES = [
    c
    for c in CASES
    if c.id
    in {
        "ls-no-store-empty-folder",
        "show-no-store-empty-folder",
        "claims-no-store-empty-folder",
        "cancel-no-store-empty-folder",
        "ls-env",
        "find-env-missing",
        "repair-mistyped-path",
        "ls-no-bucket-s3:///p",
        "show-id-control-char",
        "show-unknown-id",
        "show-corrupt-instance",
        "ls-corrupt-says-which",
        "claims-corrupt",
        "probe-store-flag",
        "worker-flow-no-attribute",
        "unknown-command",
    }
]


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=[c.id for c in SUBPROCESS_CASES])
def test_cli_matrix_as_a_process(case: Case, as_json: bool, places: dict[str, str]) -> None:
    argv = [_fill(a, places) for a in case.argv] + (["--json"] if as_json else [])
    env = {} if case.env is None else {STORE_ENV: _fill(case.env, places)}
    done = _run(argv, Path.cwd(), **env)
    if as_json and case.code == 0:
        case = Case(case.argv, case.code, warns=case.warns)
    check_outcome(done.returncode, done.stdout, done.stderr, case, as_json)
    assert os.listdir(".") == []


def test_the_commands_a_new_user_types_in_an_empty_folder(tmp_path: Path) -> None:
    """What the before-stop hook runs: no traceback, a pointer to --store and the variable."""
    for argv in (["ls"], ["ls", "--json"], ["show", "nope"], ["claims", "--json"]):
        done = _run(argv, tmp_path)
        assert done.returncode == ExitCode.NOT_FOUND and done.stdout == ""
        assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
        message = json.loads(done.stderr)["error"] if "--json" in argv else done.stderr
        assert "no store at ./wfp-data" in message and "--store" in message and STORE_ENV in message
    assert os.listdir(tmp_path) == []


def test_s3_mistakes_against_moto(
    moto_s3: S3Endpoint, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a real S3 server: an empty bucket is an empty store, a missing instance is exit 3 and
    a bucket that does not exist is one line with exit 1."""
    options = [
        "-o",
        f"endpoint_url={moto_s3.url}",
        "-o",
        f"key={moto_s3.key}",
        "-o",
        f"secret={moto_s3.secret}",
    ]
    options += ["-o", 'client_kwargs={"region_name": "us-east-1"}']
    bucket = moto_s3.create_bucket("cli")
    assert main(["ls", "--store", f"s3://{bucket}/wf", *options, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"instances": [], "unreadable": []}
    for argv, code in (
        (["show", "nope", "--store", f"s3://{bucket}/wf"], ExitCode.NOT_FOUND),
        (["ls", "--store", f"s3://{bucket}-missing/wf"], ExitCode.FAILED),
        (["repair", "--store", f"s3://{bucket}-missing/wf"], ExitCode.FAILED),
    ):
        assert main([*argv, *options]) == code, argv
        _, err = capsys.readouterr()
        assert ERROR_LINE.match(err) and "Traceback" not in err, err


@pytest.mark.slow
def test_a_new_user_runs_the_demo_then_looks_around(tmp_path: Path) -> None:
    """``demo`` without --store in an empty folder, then ``ls`` and ``show`` on the store it
    names: the completed instance shows every task's result, and the workers' event logs say
    who ran what."""
    argv = ["demo", "--instances", "2", "--workers", "2", "--work", "0.1", "--lease", "1", "--timeout", "40"]
    demo = _run(argv, tmp_path)
    assert demo.returncode == 0, demo.stderr
    assert "workers: 2 processes, each running up to 2 tasks at once" in demo.stdout
    store = re.search(r"objstore-wfp ls --store (\S+)", demo.stdout)
    events = re.search(r"Who ran what, as JSON lines per worker: (\S+)", demo.stdout)
    assert store and events, demo.stdout
    assert sorted(os.listdir(events.group(1))) == [
        "worker-1.jsonl",
        "worker-1.log",
        "worker-2.jsonl",
        "worker-2.log",
    ]
    listed = _run(["ls", "--json"], tmp_path, **{STORE_ENV: store.group(1)})
    assert [i["state"] for i in json.loads(listed.stdout)["instances"]] == ["completed", "completed"]
    shown = _run(["show", "order-002", "--json", "--store", store.group(1)], tmp_path)
    results = json.loads(shown.stdout)["results"]
    assert list(results) == ["receive", "price", "stock", "fraud", "decide", "notify"]
    assert results["receive"] == {"order": 2, "items": [3, 4]}
    again = _run(["demo", "--store", store.group(1), "--instances", "2"], tmp_path)
    assert again.returncode == ExitCode.CONFLICT and "give --replace" in again.stderr
    shutil.rmtree(Path(store.group(1)).parent)
