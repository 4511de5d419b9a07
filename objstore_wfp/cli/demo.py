"""``objstore-wfp demo``: worker processes share fork/join workflows; one is SIGKILLed mid-task
and another takes its task over once the lease expires.

The parent submits the instances, starts the workers (``objstore-wfp worker`` processes), follows
their JSON-lines event logs for the live view, kills one worker while it runs a task, stops the
others with SIGTERM at the end, checks every output against the expected one, and summarises.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from objstore_wfp.cli.demo_flow import FLOW, TASKS_PER_INSTANCE, WORK_ENV, expected_output
from objstore_wfp.cli.output import print_json
from objstore_wfp.cli.store import StoreChoice, open_cli_backend, parse_options
from objstore_wfp.errors import ConflictError, InvalidArgumentError
from objstore_wfp.model import Completed
from objstore_wfp.runtime import Client
from objstore_wfp.stores.urls import split_store_url

FINAL_TASK = FLOW.task_names()[-1]
#: Fraction of all tasks recorded before a worker is killed, so the takeover happens mid-run.
KILL_AFTER = 0.2


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen[bytes]
    events: Path
    log: Path
    offset: int = 0
    partial: bytes = b""
    #: Tasks in flight and the wall-clock time (epoch seconds) each started.
    running: dict[tuple[str, str], float] = field(default_factory=dict)
    #: Tasks whose claim the worker holds (claimed, perhaps not started yet).
    held: set[tuple[str, str]] = field(default_factory=set)
    recorded: int = 0
    requests: int = 0
    requests_by_kind: dict[str, int] = field(default_factory=dict)
    status: str = "starting"

    def new_events(self) -> list[dict[str, Any]]:
        try:
            with self.events.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()  # a line still being written
        return [json.loads(line) for line in lines if line.strip()]


@dataclass
class Kill:
    worker: str
    at: float
    tasks: list[tuple[str, str]]
    takeovers: dict[tuple[str, str], tuple[str, float, int]] = field(default_factory=dict)


@dataclass
class DemoRun:
    ids: dict[str, int]
    started: float
    executions: int = 0
    #: Attempts that raised (retried, or the last one before the workflow was marked Failed).
    failed_attempts: int = 0
    takeovers: int = 0
    recorded: set[tuple[str, str]] = field(default_factory=set)
    finished: set[str] = field(default_factory=set)
    kill: Kill | None = None
    messages: list[str] = field(default_factory=list)

    @property
    def total_tasks(self) -> int:
        return len(self.ids) * TASKS_PER_INSTANCE

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def _takeover(run: DemoRun, worker: WorkerProcess, key: tuple[str, str], token: int, say: Any) -> None:
    run.takeovers += 1
    kill = run.kill
    if kill is not None and key in kill.tasks and key not in kill.takeovers:
        delay = time.monotonic() - kill.at
        kill.takeovers[key] = (worker.name, delay, token)
        say(
            f"{worker.name} took over {key[0]}/{key[1]} {delay:.1f}s after the kill "
            f"(lease expired; fencing token {token})"
        )


def _apply(run: DemoRun, worker: WorkerProcess, event: dict[str, Any], say: Any) -> None:
    if int(event.get("requests", 0)) >= worker.requests:
        worker.requests = int(event.get("requests", 0))
        worker.requests_by_kind = event.get("requests_by_kind", {})
    kind = event["kind"]
    key = (event.get("instance_id") or "", event.get("task_id") or "")
    if kind == "ready":
        worker.status = "running"
    elif kind == "started":
        run.executions += 1
        # When the task really started (the worker's clock, this machine): the view may lag.
        worker.running[key] = datetime.fromisoformat(event["at"]).timestamp()
    elif kind == "retrying":
        run.failed_attempts += 1
    elif kind == "claimed":
        worker.held.add(key)
        if (event.get("token") or 0) > 1:
            _takeover(run, worker, key, event["token"], say)
    elif kind in ("recorded", "duplicate", "lost", "failed", "cancelled", "released"):
        worker.running.pop(key, None)
        worker.held.discard(key)
        if kind in ("recorded", "duplicate"):
            worker.recorded += kind == "recorded"
            run.recorded.add(key)
            if key[1] == FINAL_TASK:
                run.finished.add(key[0])
        elif kind == "failed":
            run.failed_attempts += 1
            run.finished.add(key[0])  # the workflow is Failed: nothing more to wait for
            say(f"{worker.name}: task {key[0]}/{key[1]} failed: {event.get('detail')}")
    elif kind == "stopped":
        worker.status = "stopped"


def _start_worker(name: str, args: argparse.Namespace, store: StoreChoice, folder: Path) -> WorkerProcess:
    events, log = folder / f"{name}.jsonl", folder / f"{name}.log"
    command = [sys.executable, "-m", "objstore_wfp", "worker", "--store", store.url]
    for option in args.option or []:
        command += ["--option", option]
    command += [
        "--flow", "objstore_wfp.cli.demo_flow:FLOW",
        "--worker-id", name,
        "--concurrency", str(args.concurrency),
        "--lease", str(args.lease),
        "--poll", "0.5",
        "--events", str(events),
        "--exit-with-parent",
    ]  # fmt: skip
    env = {**os.environ, WORK_ENV: str(args.work)}
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    return WorkerProcess(name, process, events, log)


def _stop_all(workers: list[WorkerProcess]) -> None:
    """SIGTERM (graceful: finish or release current tasks), then SIGKILL whatever lingers."""
    for w in workers:
        if w.process.poll() is None:
            w.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for w in workers:
        try:
            w.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.process.kill()
            w.process.wait()


async def _submit(store: StoreChoice, options: dict[str, Any], count: int, replace: bool) -> dict[str, int]:
    """Submit ``order-001`` .. ``order-<count>``. A store that already holds some of them is
    refused with :class:`ConflictError` unless ``replace``: with ``--store s3://...`` they may
    be somebody's real instances."""
    wanted = {f"order-{n:03d}": n for n in range(1, count + 1)}
    backend = open_cli_backend(store, options, writes=True, create=True)
    async with backend:
        present = sorted(set(wanted) & set(await backend.list_snapshots()))
        if present and not replace:
            names = ", ".join(present[:3]) + (", ..." if len(present) > 3 else "")
            raise ConflictError(
                f"store {store.url} already holds {len(present)} of the demo's instances ({names}): "
                "give --replace to overwrite them, or another --store"
            )
        client = Client(backend, [FLOW])
        for instance_id, n in wanted.items():
            await client.submit(FLOW, n, instance_id=instance_id, if_exists="replace" if replace else "error")
    return wanted


async def _outcomes(
    store: StoreChoice, options: dict[str, Any], ids: dict[str, int], wait: float
) -> dict[str, str]:
    """Per instance: ``ok``, or what is wrong with it (its state's name, or its wrong output);
    waits up to ``wait`` s for instances still in progress."""
    deadline = time.monotonic() + wait
    backend = open_cli_backend(store, options, writes=False)
    async with backend:
        while True:
            outcomes: dict[str, str] = {}
            for instance_id, n in ids.items():
                state = (await backend.load_snapshot(instance_id)).state
                if not isinstance(state, Completed):
                    outcomes[instance_id] = type(state).__name__
                elif json.loads(state.final_output) != expected_output(n):
                    outcomes[instance_id] = f"wrong output {state.final_output.decode()}"
                else:
                    outcomes[instance_id] = "ok"
            if "InProgress" not in outcomes.values() or time.monotonic() >= deadline:
                return outcomes
            await asyncio.sleep(0.2)


def _render(run: DemoRun, workers: list[WorkerProcess], header: str) -> Any:
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    done = len(run.recorded)
    table = Table(box=None, pad_edge=False)
    for column in ("worker", "pid", "status", "running", "recorded", "requests"):
        table.add_column(column)
    for w in workers:
        running = ", ".join(f"{i}/{t}" for i, t in w.running) if w.status == "running" else "-"
        style = "red" if w.status == "KILLED" else ""
        table.add_row(
            w.name, str(w.process.pid), w.status, running, str(w.recorded), str(w.requests), style=style
        )
    line = Text(
        f"tasks {done}/{run.total_tasks}   instances {len(run.finished)}/{len(run.ids)}   "
        f"executions {run.executions}   takeovers {run.takeovers}   {run.elapsed():.1f}s"
    )
    return Group(
        Text(header, style="bold"),
        ProgressBar(total=run.total_tasks, completed=done, width=60),
        line,
        table,
        Text("\n".join(run.messages[-6:]), style="cyan"),
    )


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        from rich.console import Console
    except ImportError:
        raise ImportError("the demo needs rich: pip install 'objstore-wfp[cli]'", name="rich") from None
    for name in ("instances", "workers", "concurrency"):
        if getattr(args, name) < 1:
            raise InvalidArgumentError(f"--{name} must be >= 1")
    if args.workers == 1 and not args.no_kill:
        raise InvalidArgumentError(
            "--workers 1 leaves nobody to take over from the worker the demo kills: "
            "give --workers 2 or more, or --no-kill"
        )
    if args.lease <= 0 or args.work < 0:
        raise InvalidArgumentError("--lease must be > 0 and --work >= 0")
    # A bad URL is refused before anything is created.
    if args.store is not None and split_store_url(args.store)[0] == "memory":
        raise InvalidArgumentError("memory:// lives inside one process; the demo's workers are processes")
    options = parse_options(args.option)
    created = args.store is None
    base = Path(tempfile.mkdtemp(prefix="objstore-wfp-demo-"))
    store = StoreChoice(str(base / "store") if created else args.store, "--store")
    # Piped output has no width; keep summary lines whole rather than wrapped at 80 columns.
    console = Console(stderr=args.json, width=None if sys.stdout.isatty() else 110)
    events = base / "events"
    events.mkdir()
    try:
        summary = _run_demo(args, store, options, events, console)
    finally:
        # In a folder of its own the demo keeps the workers' event logs: who ran what.
        if not created:
            shutil.rmtree(base, ignore_errors=True)
    if args.json:
        print_json(summary)
    else:
        _print_summary(console, summary)
    if created:
        console.print(
            f"\nThe store is kept: objstore-wfp ls --store {store.url}\n"
            f"Who ran what, as JSON lines per worker: {events}",
            highlight=False,
        )
    return 0 if summary["instances_completed"] == summary["instances"] else 1


def _run_demo(
    args: argparse.Namespace, store: StoreChoice, options: dict[str, Any], events: Path, console: Any
) -> dict[str, Any]:
    """Submit, start the workers, follow them, kill one, stop them all; return the summary."""
    from rich.live import Live

    header = (
        f"objstore-wfp demo: {args.instances} x '{FLOW.name}' ({TASKS_PER_INSTANCE} tasks, fork/join), "
        f"lease {args.lease:g}s\nworkers: {args.workers} processes, each running up to "
        f"{args.concurrency} tasks at once\nstore: {store.url}"
    )
    workers: list[WorkerProcess] = []
    live: Live | None = None

    def say(message: str) -> None:
        stamped = f"[{time.monotonic() - run.started:5.1f}s] {message}"
        run.messages.append(stamped)
        if live is None:
            console.print(stamped, highlight=False, soft_wrap=True)

    started = time.monotonic()
    ids = asyncio.run(_submit(store, options, args.instances, args.replace))
    run = DemoRun(ids, started)
    try:
        for k in range(1, args.workers + 1):
            workers.append(_start_worker(f"worker-{k}", args, store, events))
        if console.is_terminal and not args.json:
            live = Live(_render(run, workers, header), console=console, refresh_per_second=10)
            live.start()
        else:
            console.print(header, highlight=False)
        say(f"submitted {len(ids)} instances; started {len(workers)} workers")
        deadline = started + args.timeout
        while time.monotonic() < deadline and len(run.finished) < len(ids):
            for w in workers:
                for event in w.new_events():
                    _apply(run, w, event, say)
                if w.status not in ("KILLED", "stopped") and w.process.poll() is not None:
                    w.status = "exited"
                    tail = w.log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
                    say(f"{w.name} exited unexpectedly (code {w.process.returncode}): {tail[0]}")
            if all(w.process.poll() is not None for w in workers):
                say("every worker has exited; giving up")
                break
            if not args.no_kill and run.kill is None and len(run.recorded) >= KILL_AFTER * run.total_tasks:
                _maybe_kill(run, workers, say, 0.3 * args.work)
            if live is not None:
                live.update(_render(run, workers, header))
            time.sleep(0.02)
    finally:
        _stop_all(workers)
        for w in workers:
            for event in w.new_events():
                _apply(run, w, event, say)
        if live is not None:
            live.update(_render(run, workers, header))
            live.stop()
    outcomes = asyncio.run(_outcomes(store, options, ids, wait=5))
    return _summary(run, workers, outcomes, store.url)


def _maybe_kill(run: DemoRun, workers: list[WorkerProcess], say: Any, window: float) -> None:
    """SIGKILL a live worker in the middle of a task: one that started less than ``window``
    seconds ago (tasks last at least twice that), so the kill cannot come after its end."""
    now = time.time()
    at = time.monotonic()
    for w in workers:
        fresh = [key for key, since in w.running.items() if now - since < window]
        if w.status == "running" and fresh and w.process.poll() is None:
            w.process.send_signal(signal.SIGKILL)
            w.process.wait()
            w.status = "KILLED"
            tasks = sorted(w.held | set(w.running))
            w.running.clear()
            w.held.clear()
            run.kill = Kill(w.name, at, tasks)
            others = ", ".join(f"{i}/{t}" for i, t in tasks if (i, t) != fresh[0])
            say(
                f"SIGKILL {w.name} (pid {w.process.pid}) in the middle of {fresh[0][0]}/{fresh[0][1]}"
                + (f"; it also held {others}" if others else "")
            )
            return


def _summary(
    run: DemoRun, workers: list[WorkerProcess], outcomes: dict[str, str], store: str
) -> dict[str, Any]:
    requests = sum(w.requests for w in workers)
    by_kind: dict[str, int] = {}
    for w in workers:
        for kind, count in w.requests_by_kind.items():
            by_kind[kind] = by_kind.get(kind, 0) + count
    unique = len(run.recorded)
    kill = run.kill
    return {
        "store": store,
        "instances": len(run.ids),
        "workers": len(workers),
        "worker_pids": [w.process.pid for w in workers],
        "instances_completed": sum(v == "ok" for v in outcomes.values()),
        "problems": {k: v for k, v in outcomes.items() if v != "ok"},
        "tasks_recorded": unique,
        "task_executions": run.executions,
        "failed_attempts": run.failed_attempts,
        "duplicate_executions": max(0, run.executions - unique - run.failed_attempts),
        "takeovers": run.takeovers,
        "store_requests": requests,
        "store_requests_per_task": round(requests / unique, 1) if unique else None,
        "store_requests_by_kind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
        "elapsed_seconds": round(run.elapsed(), 1),
        "killed": None
        if kill is None
        else {
            "worker": kill.worker,
            "tasks": [f"{i}/{t}" for i, t in kill.tasks],
            "taken_over": {
                f"{i}/{t}": {"by": by, "after_seconds": round(delay, 1), "token": token}
                for (i, t), (by, delay, token) in kill.takeovers.items()
            },
        },
    }


def _print_summary(console: Any, s: dict[str, Any]) -> None:
    from rich.text import Text

    ok = s["instances_completed"] == s["instances"]
    tasks = max(1, s["tasks_recorded"])
    kinds = ", ".join(f"{k} {v / tasks:.1f}" for k, v in s["store_requests_by_kind"].items())
    rows = [
        (
            "instances completed",
            f"{s['instances_completed']}/{s['instances']}"
            + (
                " (every output checked)"
                if ok
                else "; not completed: " + ", ".join(f"{i} ({why})" for i, why in s["problems"].items())
            ),
        ),
        ("tasks recorded", str(s["tasks_recorded"])),
        ("task executions", str(s["task_executions"])),
        ("duplicate executions", f"{s['duplicate_executions']} (at-least-once: runs cut short by the kill)"),
        *([("failed attempts", str(s["failed_attempts"]))] if s["failed_attempts"] else []),
        ("takeovers", str(s["takeovers"])),
    ]
    k = s["killed"]
    if k is not None:
        rows.append(("killed", f"{k['worker']} holding {', '.join(k['tasks'])}"))
        for task, v in k["taken_over"].items():
            rows.append(("taken over", f"{task} by {v['by']} {v['after_seconds']}s after the kill"))
    else:
        rows.append(("killed", "nobody (--no-kill, or the run ended first)"))
    rows += [
        ("store requests per task", f"{s['store_requests_per_task']}  ({kinds})"),
        ("store requests", f"{s['store_requests']} by {s['workers']} workers, idle polling included"),
        ("elapsed", f"{s['elapsed_seconds']}s"),
    ]
    width = max(len(label) for label, _ in rows)
    console.print()
    console.print(Text("summary", style="bold underline"))
    for label, value in rows:
        console.print(Text.assemble((label.ljust(width), "bold"), "  ", value), soft_wrap=True)
