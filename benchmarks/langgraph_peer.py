"""Our LangGraph saver against the peer ``langgraph-checkpoint-objectstorage``, in one run.

``python -m benchmarks.langgraph_peer [--runs 40] [--quick]`` (needs the ``langgraph`` and test
extras, and the peer, installed for this benchmark only: ``pip install
langgraph-checkpoint-objectstorage``). Not part of the test run.

1. Requests per call on moto_server, counted by an HTTP proxy in front of it (every request
   either saver sends, retries and listings included): ``put`` of a new latest checkpoint,
   ``get_tuple`` of the latest checkpoint and ``list(limit=10)``, on a thread with a short and a
   long history (the one-node graph run ``--short`` and ``--long`` times: 3 checkpoints a run).
2. The two-process lost-update test of ``tests/langgraph/test_races.py`` against both savers, on
   local disk and on moto: two processes each run the graph ``--runs`` times on one thread;
   our saver's conflicts are retried, the peer raises none. Lost updates = completed runs whose
   tag is missing from the final log.
"""

from __future__ import annotations

import argparse
import json
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint

from benchmarks.moto import Moto, moto_server
from tests import procs
from tests.langgraph.graphs import counter_graph, hammer, open_saver
from tests.servers.faultproxy import FaultProxy

SAVERS = ("ours", "peer")


def _close(saver: BaseCheckpointSaver[Any]) -> None:
    close = getattr(saver, "close", None)
    if close is not None:
        close()


@contextmanager
def _saver(kind: str, url: str, options: dict[str, Any]) -> Iterator[BaseCheckpointSaver[Any]]:
    saver = open_saver(kind, url, options)
    try:
        yield saver
    finally:
        _close(saver)


def requests_per_call(kind: str, moto: Moto, proxy: FaultProxy, history_runs: int) -> dict[str, int]:
    """Requests one call costs on a thread the graph has run ``history_runs`` times."""
    url = f"s3://{moto.new_bucket()}/lg"
    options = {**moto.storage_options(), "endpoint_url": proxy.url}
    config = {"configurable": {"thread_id": "bench", "checkpoint_ns": ""}}
    with _saver(kind, url, options) as saver:
        graph = counter_graph(saver)
        for run in range(history_runs):
            graph.invoke({"tag": f"r{run}"}, config)
        latest = saver.get_tuple(config)
        assert latest is not None
        found: dict[str, int] = {}

        def measure(name: str, call: Any) -> None:
            before = len(proxy.records)
            call()
            found[name] = len(proxy.records) - before

        measure("get_tuple latest", lambda: saver.get_tuple(config))
        measure("list limit=10", lambda: list(saver.list(config, limit=10)))
        step = latest.metadata.get("step", 0) + 1
        measure(
            "put",
            lambda: saver.put(latest.config, empty_checkpoint(), {"source": "update", "step": step}, {}),
        )
        found["checkpoints in thread"] = len(list(saver.list(config)))
    return found


def lost_updates(kind: str, url: str, options: dict[str, Any], runs: int, folder: Path) -> dict[str, Any]:
    """The two-process test; what each process completed and what the thread ended with."""
    thread_id = f"race-{secrets.token_hex(4)}"
    barrier = procs.context().Barrier(2)
    outs = [str(folder / f"{kind}-{secrets.token_hex(4)}-{i}.json") for i in range(2)]
    codes = procs.run_all(
        hammer, [(kind, i, url, options, thread_id, runs, barrier, outs[i]) for i in range(2)], 600
    )
    results = [procs.read_json(p) for p in outs if Path(p).exists()]
    completed = [tag for r in results for tag in r["completed"]]
    with _saver(kind, url, options) as saver:
        values = counter_graph(saver).get_state({"configurable": {"thread_id": thread_id}}).values
    log = values.get("log", [])
    return {
        "exit codes": codes,
        "runs completed": len(completed),
        "runs failed": sum(len(r["failed"]) for r in results),
        "conflicts retried": sum(r["conflicts"] for r in results),
        "final count": values.get("count", 0),
        "final log entries": len(log),
        "lost updates": len(set(completed) - set(log)),
        "serial": values.get("count") == len(log) == len(set(log)) == len(completed),
        "first failures": [f for r in results for f in r["failed"]][:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="graph runs per process (default 40)")
    parser.add_argument("--short", type=int, default=4, help="graph runs before the short-history figures")
    parser.add_argument("--long", type=int, default=30, help="graph runs before the long-history figures")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    report: dict[str, Any] = {"requests per call": {}, "two processes": {}}
    with moto_server() as moto, FaultProxy(moto.url) as proxy, tempfile.TemporaryDirectory() as tmp:
        for kind in SAVERS:
            for runs in (args.short, args.long):
                report["requests per call"][f"{kind}, {runs} runs"] = requests_per_call(
                    kind, moto, proxy, runs
                )
        for kind in SAVERS:
            local = Path(tmp) / f"{kind}-store"
            report["two processes"][f"{kind}, local"] = lost_updates(
                kind, str(local), {}, args.runs, Path(tmp)
            )
            url = f"s3://{moto.new_bucket()}/lg"
            report["two processes"][f"{kind}, moto"] = lost_updates(
                kind, url, moto.storage_options(), args.runs, Path(tmp)
            )
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for section, rows in report.items():
        print(f"\n{section}")
        for name, row in rows.items():
            print(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
