"""``python -m benchmarks.peers`` (``make bench-peers``): our runtime side by side with sayiir.

sayiir 1.0 (PyPI ``sayiir``: a Rust-core durable workflow engine with Python tasks) runs on its
PostgreSQL backend, against a PostgreSQL cluster this benchmark starts
(:mod:`benchmarks.postgres`); our runtime (:class:`~objstore_wfp.runtime.Worker`) runs on local
disk and on ``moto_server``. The flows are the same on every side: a chain of three steps
(``s0 -> s1 -> s2``, each adds 1) and a fork of two (``a``: +1, ``b``: -1) joined by a task that
returns the branch outputs. Every instance is 3 tasks.

One run: ``N`` instances are submitted through each system's own client (not timed), then
``W`` worker processes start, wait at a barrier, and work until the final task of every
instance has run. Figures:

- **tasks/s** from the barrier to the moment the last final task ran;
- **CPU per task**: user+sys of the worker processes over the same window
  (``getrusage(RUSAGE_SELF)`` in each worker, all threads included), and that of the server
  (PostgreSQL or moto_server: the process, its children and what they reaped, from ``/proc``);
- **store requests per task** of our runtime (S3 requests on moto), counted by
  :class:`~objstore_wfp.stores.counting.CountingStore`, so a cheaper protocol shows by re-running;
- **correctness**, checked after the run on every instance: its final output (chain: input+3;
  fork: ``{"a": input+1, "b": input-1}``), and every task executed more than once.

Runs are interleaved (per repetition: each worker count, and within it each system, in an order
that alternates between repetitions), and every figure is the median of ``--reps`` runs.

``--instructions`` counts instructions per task instead, with ``valgrind --tool=callgrind`` on one
worker process (hardware counters, ``perf stat -e instructions``, are not exposed in the VM this
was written on): two runs of different sizes, and the difference divided by the difference in
tasks, so start-up and imports cancel out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import resource
import shutil
import signal
import stat
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any

from benchmarks.common import PRICE_WRITE, Report, Row, machine, running
from benchmarks.moto import Moto, count_http, moto_server
from benchmarks.postgres import Postgres, postgres_server
from objstore_wfp.backends.objectstore import ObjectStoreBackend
from objstore_wfp.runtime import Client, Flow, Worker
from objstore_wfp.runtime.worker import MAX_POLL_FACTOR
from objstore_wfp.stores.counting import CountingStore
from objstore_wfp.stores.urls import open_store

FLOWS = ("chain", "fork")
TASKS_PER_INSTANCE = 3
SYSTEMS = ("sayiir", "local", "moto")
#: Seconds one run may take before it is declared stuck.
RUN_TIMEOUT = 600.0


# -- the task functions, shared by both runtimes ------------------------------------------------------
@dataclass
class _Shared:
    """What the processes of one run share: the count of final tasks run, and the barrier."""

    final_runs: Any
    finished: Any
    ready: Any
    go: Any
    results: Any
    instances: int = 0


_shared: _Shared | None = None  # set in each worker process
_executions: Counter[tuple[str, str]] = Counter()  # sayiir's, from its task context


def _final_ran() -> None:
    assert _shared is not None
    with _shared.final_runs.get_lock():
        _shared.final_runs.value += 1
        if _shared.final_runs.value >= _shared.instances:
            _shared.finished.set()


def _seen() -> None:
    """Record a sayiir execution (ours come from the worker's ``started`` events)."""
    from sayiir import get_task_context

    context = get_task_context()
    if context is not None:
        _executions[(context.instance_id, context.task_id)] += 1


def s0(x: int) -> int:
    _seen()
    return x + 1


def s1(x: int) -> int:
    _seen()
    return x + 1


def s2(x: int) -> int:
    _seen()
    _final_ran()
    return x + 1


def a(x: int) -> int:
    _seen()
    return x + 1


def b(x: int) -> int:
    _seen()
    return x - 1


def join(outputs: Any) -> Any:
    _seen()
    _final_ran()
    return outputs


def expected(flow: str, i: int) -> Any:
    """The output instance ``i`` (input ``i``) must end with."""
    return i + 3 if flow == "chain" else {"a": i + 1, "b": i - 1}


def _ours_step(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The same function as an ``async`` step: our worker awaits those on its event loop (the
    benchmarks' convention, figure 4), where a plain function would go to a thread."""

    async def step(x: Any) -> Any:
        return fn(x)

    step.__name__ = fn.__name__
    return step


def ours_flow(flow: str) -> Flow:
    if flow == "chain":
        return Flow("peer-chain").step(_ours_step(s0)).step(_ours_step(s1)).step(_ours_step(s2))
    return Flow("peer-fork").fork(_ours_step(a), _ours_step(b)).join(_ours_step(join))


def sayiir_flow(flow: str) -> Any:
    from sayiir import Flow as SayiirFlow

    if flow == "chain":
        return SayiirFlow("peer-chain").then(s0).then(s1).then(s2).build()
    return SayiirFlow("peer-fork").fork().branch(a).branch(b).join(join).build()


# -- worker processes --------------------------------------------------------------------------------
@dataclass
class _Job:
    system: str
    url: str
    options: dict[str, Any]
    flow: str
    instances: int
    poll: float
    concurrency: int


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _worker_process(job: _Job, shared: _Shared) -> None:
    global _shared
    _shared = shared
    if job.system == "sayiir":
        shared.results.put(_sayiir_worker(job, shared))
    else:
        shared.results.put(asyncio.run(_ours_worker(job, shared)))


def _sayiir_worker(job: _Job, shared: _Shared) -> dict[str, Any]:
    from sayiir import PostgresBackend
    from sayiir import Worker as SayiirWorker

    backend = PostgresBackend(job.url)
    worker = SayiirWorker(f"w{os.getpid()}", backend, poll_interval=job.poll, claim_ttl=300.0)
    shared.ready.release()
    shared.go.wait()
    cpu = _cpu_seconds()
    handle = worker.start([sayiir_flow(job.flow)])
    shared.finished.wait(RUN_TIMEOUT)
    cpu = _cpu_seconds() - cpu
    handle.shutdown()
    handle.join()
    return {"cpu": cpu, "executions": dict(_executions), "requests": None}


async def _ours_worker(job: _Job, shared: _Shared) -> dict[str, Any]:
    counting = CountingStore(open_store(job.url, **job.options))
    backend = ObjectStoreBackend(counting)
    await backend.verify_store()  # once per process, as a deployment would: not in the figure
    counting.reset()
    http = await count_http(counting.inner) if job.url.startswith("s3://") else None
    executions: Counter[tuple[str, str]] = Counter()

    def seen(event: Any) -> None:
        if event.kind == "started":
            executions[(event.instance_id, event.task_id)] += 1

    worker = Worker(
        backend,
        [ours_flow(job.flow)],
        concurrency=job.concurrency,
        lease=timedelta(minutes=5),
        poll_interval=job.poll,
        on_event=seen,
    )

    async def stop_when_finished() -> None:
        await asyncio.to_thread(shared.finished.wait, RUN_TIMEOUT)
        worker.stop()

    shared.ready.release()
    await asyncio.to_thread(shared.go.wait)
    cpu = _cpu_seconds()
    stopper = asyncio.ensure_future(stop_when_finished())
    running = asyncio.ensure_future(worker.run_forever(handle_signals=False))
    await stopper
    cpu = _cpu_seconds() - cpu
    await running
    await backend.close()
    counts = http if http is not None else counting.counts
    return {"cpu": cpu, "executions": dict(executions), "requests": sum(counts.values())}


def _tree_cpu(pid: int) -> float:
    """User+sys seconds of a server process, its live descendants and the children it reaped:
    PostgreSQL forks one backend per connection (each in a session of its own, so a process
    group would miss them), moto_server runs in one process."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        # After the command: state ppid ...; utime stime cutime cstime are fields 14-17.
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = sum(int(f) for f in fields[11:15])
    total = 0
    for proc, ticks in times.items():
        ancestor = proc
        while ancestor not in (pid, 0, 1) and ancestor in parents:
            ancestor = parents[ancestor]
        if ancestor == pid:
            total += ticks
    return total / tick


@dataclass
class RunResult:
    seconds: float
    tasks: int
    worker_cpu: float
    server_cpu: float | None
    requests: int | None
    twice: int
    #: "<instance>: <what it ended with>" for every instance that did not end as expected.
    wrong: list[str]
    load: float

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds


def _spawn_context(wrapper: Path | None) -> Any:
    ctx = mp.get_context("spawn")
    if wrapper is not None:
        # The resource tracker is spawned with the same executable: start it first, so that
        # only the workers run under callgrind.
        resource_tracker.ensure_running()
        ctx.set_executable(str(wrapper))
    return ctx


def _run_workers(job: _Job, workers: int, server_pid: int | None, wrapper: Path | None = None) -> RunResult:
    """Start the workers, release them together, wait for the last final task; not the checks."""
    ctx = _spawn_context(wrapper)
    shared = _Shared(
        ctx.Value("i", 0), ctx.Event(), ctx.Semaphore(0), ctx.Event(), ctx.Queue(), job.instances
    )
    procs = [ctx.Process(target=_worker_process, args=(job, shared), daemon=True) for _ in range(workers)]
    try:
        with running(procs):
            for _ in procs:
                if not shared.ready.acquire(timeout=RUN_TIMEOUT):
                    raise RuntimeError(f"{job.system}: a worker process did not start")
            server_cpu = _tree_cpu(server_pid) if server_pid else 0.0
            started = time.perf_counter()
            shared.go.set()
            if not shared.finished.wait(RUN_TIMEOUT):
                done = shared.final_runs.value
                raise RuntimeError(f"{job.system}: {done} of {job.instances} instances finished")
            seconds = time.perf_counter() - started
            server = _tree_cpu(server_pid) - server_cpu if server_pid else None
            reports = [shared.results.get(timeout=RUN_TIMEOUT) for _ in procs]
            for p in procs:
                p.join(timeout=60)
    finally:
        if wrapper is not None:
            ctx.set_executable(sys.executable)
    executions: Counter[tuple[str, str]] = Counter()
    for r in reports:
        executions.update(r["executions"])
    return RunResult(
        seconds=seconds,
        tasks=job.instances * TASKS_PER_INSTANCE,
        worker_cpu=sum(r["cpu"] for r in reports),
        server_cpu=server,
        requests=None if reports[0]["requests"] is None else sum(r["requests"] for r in reports),
        twice=sum(1 for n in executions.values() if n > 1),
        wrong=[],
        load=os.getloadavg()[0],
    )


# -- the systems -------------------------------------------------------------------------------------
class _Sayiir:
    name = "sayiir"

    def __init__(self, postgres: Postgres, *, durable: bool) -> None:
        self.label = "sayiir + PostgreSQL" + ("" if durable else " (fsync off)")
        self.postgres = postgres
        self.server_pid: int | None = postgres.pid

    def prepare(self, flow: str, n: int) -> tuple[str, dict[str, Any]]:
        from sayiir import PostgresBackend, WorkflowClient

        url = self.postgres.new_database()
        client = WorkflowClient(PostgresBackend(url))
        workflow = sayiir_flow(flow)
        for i in range(n):
            client.submit(workflow, f"i{i}", i)
        return url, {}

    def wrong_outputs(self, url: str, options: dict[str, Any], flow: str, n: int) -> list[str]:
        """Instances that did not end with the expected output (waiting up to 30 s for
        stragglers), each with what it ended with."""
        from sayiir import PostgresBackend, WorkflowClient

        client = WorkflowClient(PostgresBackend(url))
        pending = set(range(n))
        deadline = time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            pending = {i for i in pending if client.status(f"i{i}").is_in_progress()}
            if pending:
                time.sleep(0.5)
        wrong = []
        for i in range(n):
            status = client.status(f"i{i}")
            if not status.is_completed():
                wrong.append(f"i{i}: {status.status} {status.error or ''}".rstrip())
            elif status.output != expected(flow, i):
                wrong.append(f"i{i}: output {status.output!r}, expected {expected(flow, i)!r}")
        return wrong


class _Ours:
    def __init__(self, name: str, base: Path | None = None, moto: Moto | None = None) -> None:
        self.name = name
        self.label = f"objstore-wfp, {'local disk' if moto is None else 'moto_server'}"
        self.base = base
        self.moto = moto
        self.server_pid = moto.pid if moto is not None else None
        self.bucket = moto.new_bucket() if moto is not None else ""

    def _fresh(self) -> tuple[str, dict[str, Any]]:
        if self.moto is not None:
            return f"s3://{self.bucket}/{uuid.uuid4().hex[:8]}", self.moto.storage_options()
        assert self.base is not None
        return str(self.base / uuid.uuid4().hex[:8]), {}

    def prepare(self, flow: str, n: int) -> tuple[str, dict[str, Any]]:
        url, options = self._fresh()

        async def submit() -> None:
            async with ObjectStoreBackend.from_url(url, **options) as backend:
                client = Client(backend)
                for i in range(n):
                    await client.submit(ours_flow(flow), i, instance_id=f"i{i}")

        asyncio.run(submit())
        return url, options

    def wrong_outputs(self, url: str, options: dict[str, Any], flow: str, n: int) -> list[str]:
        async def check() -> list[str]:
            async with ObjectStoreBackend.from_url(url, **options) as backend:
                client = Client(backend)
                wrong = []
                for i in range(n):
                    try:
                        output = await client.result(f"i{i}", timeout=30)
                    except Exception as exc:  # failed, cancelled, still running: all wrong here
                        wrong.append(f"i{i}: {type(exc).__name__} {exc}")
                        continue
                    if output != expected(flow, i):
                        wrong.append(f"i{i}: output {output!r}, expected {expected(flow, i)!r}")
                return wrong

        return asyncio.run(check())


def _poll(system: Any, args: argparse.Namespace) -> float:
    return float(args.sayiir_poll if system.name == "sayiir" else args.poll)


def _run(system: Any, flow: str, n: int, workers: int, args: argparse.Namespace) -> RunResult:
    url, options = system.prepare(flow, n)
    job = _Job(system.name, url, options, flow, n, _poll(system, args), args.concurrency)
    result = _run_workers(job, workers, system.server_pid)
    result.wrong = system.wrong_outputs(url, options, flow, n)
    return result


@contextlib.contextmanager
def _systems(names: tuple[str, ...], *, durable_postgres: bool = True) -> Iterator[list[Any]]:
    with contextlib.ExitStack() as stack:
        systems: list[Any] = []
        for name in names:
            if name == "sayiir":
                postgres = stack.enter_context(postgres_server(durable=durable_postgres))
                systems.append(_Sayiir(postgres, durable=durable_postgres))
            elif name == "local":
                base = Path(tempfile.mkdtemp(prefix="objstore-wfp-bench-peers-"))
                stack.callback(shutil.rmtree, base, ignore_errors=True)
                systems.append(_Ours("local", base=base))
            else:
                systems.append(_Ours("moto", moto=stack.enter_context(moto_server())))
        yield systems


# -- throughput --------------------------------------------------------------------------------------
@dataclass
class _Cell:
    runs: list[RunResult] = field(default_factory=list)

    def median(self, fn: Callable[[RunResult], float]) -> float:
        return statistics.median(fn(r) for r in self.runs)


def throughput(args: argparse.Namespace, report: Report) -> None:
    cells: dict[tuple[str, str, int], _Cell] = {}
    with _systems(args.systems, durable_postgres=not args.postgres_no_fsync) as systems:
        for rep in range(args.reps):
            # Alternate the orders so slow drifts of a shared machine hit every side alike.
            counts = args.workers if rep % 2 == 0 else tuple(reversed(args.workers))
            for workers in counts:
                for flow in args.flows:
                    order = systems if rep % 2 == 0 else list(reversed(systems))
                    for system in order:
                        result = _run(system, flow, args.instances, workers, args)
                        cells.setdefault((flow, system.name, workers), _Cell()).runs.append(result)
                        print(
                            f"  rep {rep + 1} {flow} {system.name} x{workers}: {result.rate:,.0f} tasks/s, "
                            f"{result.worker_cpu / result.tasks * 1e3:.2f} ms CPU/task, "
                            f"run twice {result.twice}, wrong {len(result.wrong)} {result.wrong[:1]}, "
                            f"load {result.load:.2f}",
                            flush=True,
                        )
        moto = next((s.moto for s in systems if isinstance(s, _Ours) and s.moto is not None), None)
        if moto is not None:
            idle_cost(moto, report)
        for flow in args.flows:
            for workers in args.workers:
                base = cells.get((flow, "sayiir", workers))
                for system in systems:
                    cell = cells[(flow, system.name, workers)]
                    one = cells.get((flow, system.name, 1))
                    report.add(_row(flow, system.label, workers, cell, base, one))


def _row(flow: str, label: str, workers: int, cell: _Cell, base: _Cell | None, one: _Cell | None) -> Row:
    rate = cell.median(lambda r: r.rate)
    worker_ms = cell.median(lambda r: r.worker_cpu / r.tasks * 1e3)
    server = [r.server_cpu / r.tasks * 1e3 for r in cell.runs if r.server_cpu is not None]
    requests = [r.requests / r.tasks for r in cell.runs if r.requests is not None]
    loads = ", ".join(f"{r.load:.1f}" for r in cell.runs)
    wrong = [w for r in cell.runs for w in r.wrong]
    n = cell.runs[0].tasks // TASKS_PER_INSTANCE
    notes = [
        f"CPU/task: workers {worker_ms:.2f} ms"
        + (f" + server {statistics.median(server):.2f} ms" if server else ""),
        f"run twice: {sum(r.twice for r in cell.runs)} tasks",
        f"wrong/missing outputs: {len(wrong)} of {n * len(cell.runs)}"
        + (f", e.g. {wrong[0]}" if wrong else ""),
    ]
    if one is not None and workers != 1:
        notes.append(f"{rate / one.median(lambda r: r.rate):.2f}x its 1-worker rate")
    notes.append(f"load {loads}")
    return Row(
        flow,
        f"{label}, {workers} worker{'s' if workers > 1 else ''}",
        f"{rate:,.0f} tasks/s",
        f"{base.median(lambda r: r.rate):,.0f} tasks/s sayiir" if base is not None else "",
        f"{rate / base.median(lambda r: r.rate):.2f}x" if base is not None else "",
        f"{statistics.median(requests):.1f}" if requests else "",
        "; ".join(notes),
    )


# -- idle workers ------------------------------------------------------------------------------------
async def _empty_poll_requests(moto: Moto) -> Counter[str]:
    """S3 requests of one ``find_available_tasks`` that finds nothing, after one instance ran to
    the end (so the indexes have existed): what an idle worker pays per poll."""
    flow = Flow("peer-idle").step(_ours_step(abs))
    backend = ObjectStoreBackend.from_url(f"s3://{moto.new_bucket()}/idle", **moto.storage_options())
    async with backend:
        await Client(backend).submit(flow, 1, instance_id="done")
        await Worker(backend, [flow], poll_interval=0.01).run_until_idle()
        http = await count_http(backend.store)
        assert await backend.find_available_tasks("idle-worker", 4) == []
    return http


def idle_cost(moto: Moto, report: Report, poll: float = 1.0) -> None:
    """LIST requests (and their price) per idle worker-hour on S3, for the default poll interval
    polled at a fixed rate, and with the backoff's default cap."""
    requests = asyncio.run(_empty_poll_requests(moto))
    lists = requests.get("ListObjectsV2", 0)
    for label, interval in (("fixed", poll), ("backoff", poll * MAX_POLL_FACTOR)):
        per_hour = 3600 / interval * lists
        dollars = per_hour * PRICE_WRITE
        report.add(
            Row(
                "idle",
                f"one idle worker, polls every {interval:g} s ({label})",
                f"{per_hour:,.0f} LIST/hour",
                requests=f"{dict(requests)} per poll",
                note=f"${dollars:.4f}/worker-hour, ${dollars * 24 * 30:.2f}/month at $0.005 per 1,000 LIST",
            )
        )


# -- instructions ------------------------------------------------------------------------------------
def _callgrind_wrapper(directory: Path) -> Path:
    """An executable that runs this Python under callgrind, for ``set_executable``: each worker
    process then writes ``callgrind.<pid>`` into ``directory``."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise RuntimeError("valgrind not found: apt-get install valgrind")
    wrapper = directory / "python-under-callgrind"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'exec {valgrind} -q --tool=callgrind --callgrind-out-file="{directory}/callgrind.%p" '
        f'{sys.executable} "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper


def _callgrind_total(directory: Path) -> int:
    """Instructions (``Ir``) in the callgrind files in ``directory``, then remove them."""
    total = 0
    for out in directory.glob("callgrind.*"):
        for line in out.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                total += int(line.split()[1])
                break
        out.unlink()
    return total


def instructions(args: argparse.Namespace, report: Report) -> None:
    small, large = args.callgrind_sizes
    with (
        _systems(args.systems, durable_postgres=not args.postgres_no_fsync) as systems,
        tempfile.TemporaryDirectory() as tmp,
    ):
        directory = Path(tmp)
        wrapper = _callgrind_wrapper(directory)
        for flow in args.flows:
            for system in systems:
                totals = {}
                for n in (small, large):
                    url, options = system.prepare(flow, n)
                    job = _Job(system.name, url, options, flow, n, _poll(system, args), args.concurrency)
                    _run_workers(job, 1, None, wrapper)
                    totals[n] = _callgrind_total(directory)
                per_task = (totals[large] - totals[small]) / ((large - small) * TASKS_PER_INSTANCE)
                print(f"  {flow} {system.name}: {totals}", flush=True)
                report.add(
                    Row(
                        flow,
                        f"{system.label}, 1 worker: instructions/task",
                        f"{per_task / 1e6:.2f} M",
                        note=f"callgrind, ({large} - {small} instances) x {TASKS_PER_INSTANCE} tasks; "
                        f"whole runs {totals[small] / 1e9:.2f} / {totals[large] / 1e9:.2f} G",
                    )
                )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__)
    parser.add_argument("--instances", type=int, default=300, help="instances per run (3 tasks each)")
    parser.add_argument("--workers", default="1,2,4", help="worker process counts")
    parser.add_argument("--reps", type=int, default=3, help="runs per figure (the median is shown)")
    parser.add_argument("--flows", default=",".join(FLOWS), help="chain, fork, or both")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="sayiir, local, moto")
    parser.add_argument("--poll", type=float, default=0.1, help="poll interval of our workers (s)")
    parser.add_argument(
        "--sayiir-poll", type=float, default=0.001, help="sayiir's: it sleeps this long between claims"
    )
    parser.add_argument("--concurrency", type=int, default=4, help="tasks at once per worker of ours")
    parser.add_argument(
        "--postgres-no-fsync", action="store_true", help="PostgreSQL without fsync (not durable, faster)"
    )
    parser.add_argument("--instructions", action="store_true", help="callgrind instead of throughput")
    parser.add_argument("--callgrind-sizes", default="20,60", help="the two run sizes (instances)")
    args = parser.parse_args()
    args.workers = tuple(int(w) for w in args.workers.split(","))
    args.flows = tuple(f for f in args.flows.split(",") if f)
    args.systems = tuple(s for s in args.systems.split(",") if s)
    args.callgrind_sizes = tuple(int(s) for s in args.callgrind_sizes.split(","))
    if not set(args.flows) <= set(FLOWS) or not set(args.systems) <= set(SYSTEMS):
        parser.error(f"flows are {FLOWS}, systems {SYSTEMS}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    description = machine()
    started = time.monotonic()
    report = Report()
    (instructions if args.instructions else throughput)(args, report)
    print()
    print(description)
    elapsed = time.monotonic() - started
    print(f"ran in {elapsed:.0f}s; poll every {args.poll} s, sayiir every {args.sayiir_poll} s")
    print()
    print(report.table())


if __name__ == "__main__":
    main()
