"""The inspection and maintenance commands: ls, show, claims, find, cancel, pause, unpause,
signal, gc, repair, probe."""

from __future__ import annotations

import argparse
import dataclasses
import re
from datetime import datetime, timedelta
from typing import Any

import orjson

from objstore_wfp.backends.objectstore import ObjectStoreBackend
from objstore_wfp.cli.output import decoded, format_time, preview, print_json, print_table
from objstore_wfp.cli.store import StoreChoice, open_cli_backend, open_cli_store, parse_options
from objstore_wfp.clock import SystemClock
from objstore_wfp.errors import ConflictError, InvalidArgumentError, NotFoundError, SerializationError
from objstore_wfp.model import (
    AtDelay,
    AtSignal,
    Cancelled,
    Completed,
    Failed,
    InProgress,
    PauseRequest,
    Signal,
    TaskClaim,
    WorkflowSnapshot,
)
from objstore_wfp.runtime import Flow
from objstore_wfp.runtime.client import Client
from objstore_wfp.runtime.progress import describe_position

CLI_WORKER_ID = "objstore-wfp-cli"
#: Who the CLI says asked for a cancellation or a pause.
CLI_REQUESTER = "objstore-wfp cli"


def state_name(snapshot: WorkflowSnapshot) -> str:
    state = snapshot.state
    if isinstance(state, InProgress):
        return "in_progress"
    if isinstance(state, Completed):
        return "completed"
    if isinstance(state, Failed):
        return "failed"
    return "cancelled"


def snapshot_summary(snapshot: WorkflowSnapshot) -> dict[str, Any]:
    return {
        "instance_id": snapshot.instance_id,
        "definition_hash": snapshot.definition_hash,
        "state": state_name(snapshot),
        "position": describe_position(snapshot.position),
        "priority": snapshot.priority,
        "created_at": snapshot.created_at,
        "updated_at": snapshot.updated_at,
    }


def claim_doc(claim: TaskClaim, now: datetime) -> dict[str, Any]:
    return {
        "instance_id": claim.instance_id,
        "task_id": claim.task_id,
        "worker_id": claim.worker_id,
        "token": claim.token,
        "claimed_at": claim.claimed_at,
        "expires_at": claim.expires_at,
        "live": not claim.is_expired(now),
    }


def waiting_doc(snapshot: WorkflowSnapshot) -> dict[str, Any] | None:
    """What an in-progress instance waits for besides a task: a delay or a signal."""
    wait = snapshot.waiting_on()
    if isinstance(wait, AtDelay):
        return {"kind": "delay", "step": wait.step_id, "until": wait.wake_at}
    if isinstance(wait, AtSignal):
        return {
            "kind": "signal",
            "step": wait.step_id,
            "signal": wait.signal_name,
            "timeout_at": wait.timeout_at,
        }
    return None


def _waiting_line(wait: dict[str, Any], now: datetime) -> str:
    if wait["kind"] == "delay":
        return f"delay {wait['step']} until {format_time(wait['until'])} ({_relative(wait['until'], now)})"
    timeout = wait["timeout_at"]
    limit = "no timeout" if timeout is None else f"timeout {format_time(timeout)} ({_relative(timeout, now)})"
    return f"signal {wait['signal']} at step {wait['step']}, {limit}"


def _relative(moment: datetime, now: datetime) -> str:
    left = (moment - now).total_seconds()
    return f"in {left:.1f}s" if left > 0 else f"due {-left:.1f}s ago"


def pause_doc(request: PauseRequest | None) -> dict[str, Any] | None:
    if request is None:
        return None
    return {
        "reason": request.reason,
        "requested_by": request.requested_by,
        "requested_at": request.requested_at,
    }


def signal_doc(signal: Signal) -> dict[str, Any]:
    return {
        "instance_id": signal.instance_id,
        "name": signal.name,
        "seq": signal.seq,
        "sent_at": signal.sent_at,
        "payload": decoded(signal.payload),
    }


def _expiry(claim: TaskClaim, now: datetime) -> str:
    if claim.expires_at is None:
        return "never"
    left = (claim.expires_at - now).total_seconds()
    return f"in {left:.1f}s" if left > 0 else f"expired {-left:.1f}s ago"


def _backend(args: argparse.Namespace, *, writes: bool) -> ObjectStoreBackend:
    return open_cli_backend(args.choice, parse_options(args.option), writes=writes)


async def cmd_ls(args: argparse.Namespace) -> int:
    backend = _backend(args, writes=False)
    async with backend:
        rows: list[dict[str, Any]] = []
        unreadable: list[dict[str, str]] = []
        for instance_id in await backend.list_snapshots():
            try:
                snapshot = await backend.load_snapshot(instance_id)
            except NotFoundError:
                continue  # deleted while listing
            except SerializationError as exc:
                unreadable.append({"instance_id": instance_id, "error": str(exc)})
                continue
            if args.state and state_name(snapshot) != args.state:
                continue
            rows.append(snapshot_summary(snapshot))
    if args.json:
        print_json({"instances": rows, "unreadable": unreadable})
        return 0
    print_table(
        ["INSTANCE", "FLOW", "STATE", "POSITION", "UPDATED"],
        [[r["instance_id"], r["definition_hash"], r["state"], r["position"], r["updated_at"]] for r in rows],
    )
    for bad in unreadable:
        print(f"unreadable: {bad['instance_id']}: {bad['error']}")
    return 0


def _known_flows(specs: list[str] | None) -> dict[str, Flow]:
    """The demo's flow and those given with ``--flow``, by definition hash."""
    from objstore_wfp.cli.demo_flow import FLOW as DEMO_FLOW
    from objstore_wfp.cli.flows import load_flows

    return {f.definition_hash: f for f in [DEMO_FLOW, *load_flows(specs or [])]}


async def _finished_results(
    backend: ObjectStoreBackend, snapshot: WorkflowSnapshot, flows: dict[str, Flow]
) -> dict[str, bytes] | None:
    """The recorded results of a Completed or Failed instance, whose snapshot no longer lists
    its tasks: looked up task by task through its flow; ``None`` when the flow is unknown."""
    flow = flows.get(snapshot.definition_hash)
    if flow is None:
        return None
    results: dict[str, bytes] = {}
    for task in flow.task_names():
        output = await backend.load_task_result(snapshot.instance_id, task)
        if output is not None:
            results[task] = output
    return results


async def cmd_show(args: argparse.Namespace) -> int:
    flows = _known_flows(args.flow)
    backend = _backend(args, writes=False)
    async with backend:
        snapshot = await backend.load_snapshot(args.instance_id)
        request = await backend.get_cancellation_request(args.instance_id)
        paused = await backend.get_pause_request(args.instance_id)
        signals = await backend.list_signals(args.instance_id)
        claims = await backend.list_claims(args.instance_id)
        state = snapshot.state
        results: dict[str, bytes] | None
        if isinstance(state, (Completed, Failed)):
            results = await _finished_results(backend, snapshot, flows)
        else:
            results = {t: r.output for t, r in snapshot.completed_tasks.items()}
    now = SystemClock().now()
    doc = snapshot_summary(snapshot)
    doc["initial_input"] = decoded(snapshot.initial_input)
    doc["results"] = None if results is None else {t: decoded(o) for t, o in results.items()}
    if isinstance(state, Completed):
        doc["output"] = decoded(state.final_output)
    if isinstance(state, Failed):
        doc["error"] = state.error
    if isinstance(state, Cancelled):
        doc["cancelled"] = {
            "reason": state.reason,
            "by": state.cancelled_by,
            "at": state.cancelled_at,
            "interrupted_at_task": state.interrupted_at_task,
        }
    doc["cancellation_request"] = (
        None
        if request is None
        else {
            "reason": request.reason,
            "requested_by": request.requested_by,
            "requested_at": request.requested_at,
        }
    )
    doc["waiting"] = waiting_doc(snapshot)
    doc["paused"] = pause_doc(paused)
    doc["pending_signals"] = [signal_doc(s) for s in signals]
    doc["claims"] = [claim_doc(c, now) for c in claims]
    if args.json:
        print_json(doc)
        return 0
    print(f"instance   {snapshot.instance_id}")
    print(f"flow       {snapshot.definition_hash}")
    print(f"state      {doc['state']}")
    print(f"position   {doc['position']}")
    if doc["waiting"] is not None:
        print(f"waiting    {_waiting_line(doc['waiting'], now)}")
    if paused is not None:
        print(f"paused     {paused.reason} (by {paused.requested_by}, at {format_time(paused.requested_at)})")
    print(f"priority   {snapshot.priority}")
    print(f"created    {format_time(snapshot.created_at)}")
    print(f"updated    {format_time(snapshot.updated_at)}")
    print(f"input      {preview(snapshot.initial_input)}")
    if isinstance(state, Completed):
        print(f"output     {preview(state.final_output)}")
    if isinstance(state, Failed):
        print(f"error      {state.error}")
    if isinstance(state, Cancelled):
        print(
            f"cancelled  {state.reason} (by {state.cancelled_by}, at task {state.interrupted_at_task or '-'})"
        )
    if request is not None:
        print(f"cancel requested  {request.reason} (by {request.requested_by})")
    print("\nresults")
    if results is None:
        print(f"(flow {snapshot.definition_hash} unknown: give --flow MODULE:ATTR to list its task results)")
    else:
        print_table(["TASK", "OUTPUT"], [[t, preview(o)] for t, o in results.items()])
    if signals:
        print("\npending signals")
        print_table(
            ["NAME", "SEQ", "SENT", "PAYLOAD"],
            [[s.name, s.seq, s.sent_at, preview(s.payload)] for s in signals],
        )
    print("\nclaims")
    print_table(
        ["TASK", "WORKER", "TOKEN", "EXPIRES"],
        [[c.task_id, c.worker_id, c.token, _expiry(c, now)] for c in claims],
    )
    return 0


async def cmd_claims(args: argparse.Namespace) -> int:
    backend = _backend(args, writes=False)
    async with backend:
        claims = await backend.list_claims(args.instance)
    now = SystemClock().now()
    if not args.all:
        claims = [c for c in claims if not c.is_expired(now)]
    if args.json:
        print_json({"claims": [claim_doc(c, now) for c in claims]})
        return 0
    print_table(
        ["INSTANCE", "TASK", "WORKER", "TOKEN", "EXPIRES"],
        [[c.instance_id, c.task_id, c.worker_id, c.token, _expiry(c, now)] for c in claims],
    )
    return 0


async def cmd_find(args: argparse.Namespace) -> int:
    backend = _backend(args, writes=False)
    async with backend:
        tasks = await backend.find_available_tasks(CLI_WORKER_ID, args.limit)
    if args.json:
        print_json(
            {
                "tasks": [
                    {
                        "instance_id": t.instance_id,
                        "task_id": t.task_id,
                        "definition_hash": t.workflow_definition_hash,
                        "priority": t.priority,
                        "input": decoded(t.input),
                    }
                    for t in tasks
                ]
            }
        )
        return 0
    print_table(
        ["INSTANCE", "TASK", "FLOW", "PRIORITY", "INPUT"],
        [
            [t.instance_id, t.task_id, t.workflow_definition_hash, t.priority, preview(t.input, 40)]
            for t in tasks
        ],
    )
    return 0


async def cmd_cancel(args: argparse.Namespace) -> int:
    backend = _backend(args, writes=True)
    async with backend:
        changed = await Client(backend).cancel(args.instance_id, args.reason, CLI_REQUESTER)
    if args.json:
        print_json({"instance_id": args.instance_id, "cancelled": True, "changed": changed})
    else:
        print(f"{args.instance_id}: {'cancelled' if changed else 'was already cancelled'}")
    return 0


async def cmd_pause(args: argparse.Namespace) -> int:
    backend = _backend(args, writes=True)
    async with backend:
        await Client(backend).pause(args.instance_id, args.reason, CLI_REQUESTER)
        request = await backend.get_pause_request(args.instance_id)
    if args.json:
        print_json({"instance_id": args.instance_id, "paused": pause_doc(request)})
    elif request is not None:
        print(f"{args.instance_id}: paused ({request.reason}, by {request.requested_by})")
    return 0


async def cmd_unpause(args: argparse.Namespace) -> int:
    backend = _backend(args, writes=True)
    async with backend:
        was = await backend.get_pause_request(args.instance_id)
        await Client(backend).unpause(args.instance_id)
    if args.json:
        print_json({"instance_id": args.instance_id, "resumed": was is not None})
    else:
        print(f"{args.instance_id}: {'resumed' if was is not None else 'was not paused'}")
    return 0


async def cmd_signal(args: argparse.Namespace) -> int:
    try:
        value = orjson.loads(args.payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgumentError(f"--payload must be JSON: {exc}") from None
    backend = _backend(args, writes=True)
    async with backend:
        signal = await Client(backend).send_signal(args.instance_id, args.name, value)
    if args.json:
        print_json(signal_doc(signal))
    else:
        print(f"{args.instance_id}: sent signal {signal.name} (seq {signal.seq})")
    return 0


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")


def parse_duration(text: str) -> timedelta:
    """``90``, ``45s``, ``30m``, ``12h``, ``7d``."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise InvalidArgumentError(f"duration must look like 45s, 30m, 12h or 7d, got {text!r}")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return timedelta(seconds=float(match.group(1)) * unit)


async def cmd_gc(args: argparse.Namespace) -> int:
    age = parse_duration(args.older_than)
    cutoff = SystemClock().now() - age
    deleted: list[str] = []
    backend = _backend(args, writes=not args.dry_run)
    async with backend:
        for instance_id in await backend.list_snapshots():
            try:
                snapshot = await backend.load_snapshot(instance_id)
            except (NotFoundError, SerializationError):
                continue
            if not snapshot.is_terminal or snapshot.updated_at > cutoff:
                continue
            if not args.dry_run:
                try:
                    # Only the copy judged finished: a replace since then made a new instance.
                    await backend.delete_snapshot(instance_id, if_version=snapshot.version)
                except (NotFoundError, ConflictError):
                    continue
            deleted.append(instance_id)
    if args.json:
        print_json({"deleted": deleted, "dry_run": args.dry_run, "older_than_seconds": age.total_seconds()})
    else:
        verb = "would delete" if args.dry_run else "deleted"
        print(f"{verb} {len(deleted)} finished instance(s) last updated more than {args.older_than} ago")
        for instance_id in deleted:
            print(f"  {instance_id}")
    return 0


async def cmd_repair(args: argparse.Namespace) -> int:
    backend = _backend(args, writes=True)
    async with backend:
        report = await backend.repair(grace=parse_duration(args.grace))
    doc = dataclasses.asdict(report)
    if args.json:
        print_json(doc)
    else:
        print_table(
            ["CHECKED", "VALUE"], [[k, v if not isinstance(v, list) else len(v)] for k, v in doc.items()]
        )
        for key in report.unreadable:
            print(f"unreadable: {key}")
    return 0


async def cmd_probe(args: argparse.Namespace) -> int:
    from objstore_wfp.stores.probe import probe_store

    store = open_cli_store(StoreChoice(args.url, "the URL to probe"), parse_options(args.option))
    try:
        report = await probe_store(store)
    finally:
        await store.close()
    doc = {
        "store": report.store,
        "create_if_absent": report.create_if_absent,
        "compare_and_swap": report.compare_and_swap,
        "conditional_delete": report.conditional_delete,
        "note": report.note,
    }
    if args.json:
        print_json(doc)
    else:
        print(f"{report.store}: usable (conditional writes enforced)")
        print_table(["CHECK", "ENFORCED"], [[k, "yes" if v else "no"] for k, v in list(doc.items())[1:4]])
        if report.note:
            print(f"note: {report.note}")
    return 0
