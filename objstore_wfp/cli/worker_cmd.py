"""``objstore-wfp worker``: run a worker process for flows given as ``module:attribute``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from datetime import timedelta
from typing import Any, TextIO

from objstore_wfp.cli.flows import load_flows
from objstore_wfp.cli.output import print_json
from objstore_wfp.cli.store import open_cli_backend, parse_options
from objstore_wfp.errors import InvalidArgumentError
from objstore_wfp.runtime import Flow, Worker, WorkerEvent
from objstore_wfp.stores.counting import CountingStore


class EventLog:
    """Writes each worker event as one JSON line, with the process's store requests so far."""

    def __init__(self, out: TextIO, store: CountingStore) -> None:
        self.out = out
        self.store = store

    def __call__(self, event: WorkerEvent) -> None:
        self.write(event.to_json())

    def write(self, doc: dict[str, Any]) -> None:
        doc["requests"] = self.store.total
        doc["requests_by_kind"] = dict(self.store.counts)
        doc["pid"] = os.getpid()
        self.out.write(json.dumps(doc) + "\n")
        self.out.flush()


async def _watch_parent(worker: Worker, parent: int) -> None:
    """Stop the worker if the process that started it goes away, so none is left behind."""
    while True:
        await asyncio.sleep(0.5)
        if os.getppid() != parent:
            break
    worker.stop()
    worker.stop()


def cmd_worker(args: argparse.Namespace) -> int:
    flows = load_flows(args.flow)
    if args.concurrency < 1 or args.lease <= 0 or args.poll <= 0:
        raise InvalidArgumentError("--concurrency must be >= 1, --lease and --poll > 0")
    if args.max_poll is not None and args.max_poll < args.poll:
        raise InvalidArgumentError("--max-poll must be at least --poll")
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(args.events, "a", encoding="utf-8")) if args.events else None
        return asyncio.run(_work(args, flows, out))


async def _work(args: argparse.Namespace, flows: list[Flow], out: TextIO | None) -> int:
    backend = open_cli_backend(args.choice, parse_options(args.option), writes=True, count=True)
    store = backend.store
    assert isinstance(store, CountingStore)
    lease = timedelta(seconds=args.lease)
    async with backend:
        await backend.verify_store()
        store.reset()  # count what the work costs, not the one-time probe
        log = EventLog(out, store) if out else None
        worker = Worker(
            backend,
            flows,
            worker_id=args.worker_id,
            concurrency=args.concurrency,
            lease=lease,
            poll_interval=args.poll,
            max_poll_interval=args.max_poll,
            on_event=log,
        )
        if log:
            log.write({"kind": "ready", "worker_id": worker.worker_id})
        watchdog = (
            asyncio.ensure_future(_watch_parent(worker, os.getppid())) if args.exit_with_parent else None
        )
        try:
            if args.once:
                done = await worker.run_once()
            elif args.until_idle:
                done = await worker.run_until_idle()
            else:
                done = await worker.run_forever()
        finally:
            if watchdog:
                watchdog.cancel()
        if log:
            log.write({"kind": "stopped", "worker_id": worker.worker_id, "completed": done})
    if args.json:
        print_json({"worker_id": worker.worker_id, "completed": done, "store_requests": dict(store.counts)})
    elif not args.quiet:
        print(f"{worker.worker_id}: completed {done} task(s), {store.total} store requests")
    return 0
