"""The one-node graph of the LangGraph lost-update tests and benchmark, and the child processes
that run it (started through :mod:`tests.procs`, so they are real OS processes).

Every run applies one input, ``tag``, and the node adds one to ``count`` and appends the tag to
``log``; every committed checkpoint therefore has ``count == len(log)``, and a history without
lost updates ends with one log entry per completed run.
"""

from __future__ import annotations

import operator
import time
from multiprocessing.synchronize import Barrier
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from objstore_wfp.errors import SerializationError
from objstore_wfp.integrations.langgraph import CheckpointConflictError, ObjectStoreSaver
from tests.procs import BARRIER_TIMEOUT, write_json

#: Conflicts one run may meet before the child gives up (a livelock would show as a failure).
MAX_CONFLICTS_PER_RUN = 200


class CounterState(TypedDict, total=False):
    count: int
    log: Annotated[list[str], operator.add]
    tag: str


def bump(state: CounterState) -> dict[str, Any]:
    return {"count": state.get("count", 0) + 1, "log": [state["tag"]]}


def counter_graph(saver: BaseCheckpointSaver[Any]) -> CompiledStateGraph[Any, Any, Any, Any]:
    builder = StateGraph(CounterState)
    builder.add_node("bump", bump)
    builder.add_edge(START, "bump")
    builder.add_edge("bump", END)
    return builder.compile(checkpointer=saver)


def open_saver(kind: str, url: str, options: dict[str, Any]) -> BaseCheckpointSaver[Any]:
    """``"ours"``: :class:`ObjectStoreSaver`; ``"peer"``: ``langgraph-checkpoint-objectstorage``
    (installed for the benchmark only)."""
    if kind == "ours":
        return ObjectStoreSaver.from_url(url, **options)
    from langgraph_checkpoint_objectstorage import ObjectStorageSaver

    peer: BaseCheckpointSaver[Any] = ObjectStorageSaver.from_conn_string(url, **options)
    return peer


def hammer(
    kind: str,
    index: int,
    url: str,
    options: dict[str, Any],
    thread_id: str,
    runs: int,
    barrier: Barrier,
    out_path: str,
) -> None:
    """Child: run the graph ``runs`` times on ``thread_id``, retrying a run on
    :class:`CheckpointConflictError` as a user would; other errors are recorded (the peer's) and
    the run counts as failed."""
    saver = open_saver(kind, url, options)
    graph = counter_graph(saver)
    config = {"configurable": {"thread_id": thread_id}}
    completed: list[str] = []
    failed: list[str] = []
    conflicts = 0
    barrier.wait(BARRIER_TIMEOUT)
    for run in range(runs):
        tag = f"p{index}-{run:03d}"
        for _ in range(MAX_CONFLICTS_PER_RUN):
            try:
                graph.invoke({"tag": tag}, config)
            except CheckpointConflictError:
                conflicts += 1
                continue
            except Exception as exc:
                if kind == "ours":
                    raise
                failed.append(f"{tag}: {type(exc).__name__}: {exc}"[:300])
                break
            completed.append(tag)
            break
        else:
            raise AssertionError(f"{tag}: {MAX_CONFLICTS_PER_RUN} conflicts in a row")
    write_json(out_path, {"completed": completed, "failed": failed, "conflicts": conflicts})
    close = getattr(saver, "close", None)
    if close is not None:
        close()


def watch(
    url: str, options: dict[str, Any], thread_id: str, final_count: int, barrier: Barrier, out_path: str
) -> None:
    """Child: read the thread (latest checkpoint, and the last five) until it reaches
    ``final_count``, recording every state that breaks ``count == len(log)``, a count that goes
    backwards, a list out of order, or an unreadable object."""
    saver = ObjectStoreSaver.from_url(url, **options)
    config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    problems: list[str] = []
    reads = 0
    highest = 0
    barrier.wait(BARRIER_TIMEOUT)
    deadline = time.monotonic() + 240
    while highest < final_count and time.monotonic() < deadline:
        try:
            latest = saver.get_tuple(config)
            recent = list(saver.list(config, limit=5))
        except SerializationError as exc:
            problems.append(f"unreadable: {exc}")
            continue
        reads += 1
        states = ([latest] if latest is not None else []) + recent
        for tup in states:
            values = tup.checkpoint["channel_values"]
            count, log = values.get("count", 0), values.get("log", [])
            if count != len(log):
                problems.append(f"{tup.checkpoint['id']}: count {count} but {len(log)} log entries")
        ids = [t.checkpoint["id"] for t in recent]
        if ids != sorted(ids, reverse=True):
            problems.append(f"list not newest first: {ids}")
        if latest is not None:
            count = latest.checkpoint["channel_values"].get("count", 0)
            if count < highest:
                problems.append(f"count went back from {highest} to {count}")
            highest = max(highest, count)
    write_json(out_path, {"reads": reads, "highest": highest, "problems": problems[:20]})
    saver.close()


def write_tasks(
    url: str, options: dict[str, Any], config: dict[str, Any], tasks: list[str], barrier: Barrier
) -> None:
    """Child: ``put_writes`` for each task of ``tasks`` (two writes each) on one checkpoint."""
    saver = ObjectStoreSaver.from_url(url, **options)
    barrier.wait(BARRIER_TIMEOUT)
    for task in tasks:
        saver.put_writes(config, [("count", task), ("log", [task])], task, task_path=f"~{task}")
    saver.close()
