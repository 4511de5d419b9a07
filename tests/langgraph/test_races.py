"""The LangGraph saver under concurrency: no lost update, no dropped write, no torn read.

Two OS processes run the one-node graph of :mod:`tests.langgraph.graphs` 40 times each on one
thread, retrying on :class:`CheckpointConflictError` as a user would, while a third reads the
thread; afterwards the thread's state must be exactly what some serial order of the 80 runs
produces.
"""

from __future__ import annotations

import itertools
import secrets
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint

from objstore_wfp.integrations.langgraph import FORK, CheckpointConflictError, ObjectStoreSaver
from objstore_wfp.stores.counting import CountingStore
from objstore_wfp.stores.urls import open_store
from tests import procs
from tests.backends import StoreTarget
from tests.langgraph.graphs import counter_graph, hammer, watch, write_tasks

RUNS = 40

TARGETS = [
    pytest.param("local_store_target", id="local"),
    pytest.param("moto_store_target", id="moto", marks=pytest.mark.slow),
]


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest) -> StoreTarget:
    found: StoreTarget = request.getfixturevalue(request.param)
    return found


@pytest.mark.slow
def test_two_processes_lose_no_update(target: StoreTarget, tmp_path: Path) -> None:
    thread_id = f"race-{secrets.token_hex(4)}"
    barrier = procs.context().Barrier(3)
    outs = [str(tmp_path / f"p{i}.json") for i in range(2)]
    watch_out = str(tmp_path / "watch.json")
    args = [("ours", i, target.url, target.options, thread_id, RUNS, barrier, outs[i]) for i in range(2)]
    ctx = procs.context()
    watcher = ctx.Process(  # type: ignore[attr-defined]
        target=watch, args=(target.url, target.options, thread_id, 2 * RUNS, barrier, watch_out), daemon=True
    )
    watcher.start()
    try:
        assert procs.run_all(hammer, args, timeout=280) == [0, 0]
    finally:
        watcher.join(60)
        if watcher.is_alive():
            watcher.kill()
    assert watcher.exitcode == 0

    results = [procs.read_json(p) for p in outs]
    assert [len(r["completed"]) for r in results] == [RUNS, RUNS]
    assert all(r["failed"] == [] for r in results)
    with ObjectStoreSaver.from_url(target.url, **target.options) as saver:
        state = counter_graph(saver).get_state({"configurable": {"thread_id": thread_id}}).values
        history = list(saver.list({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}))
    log = state["log"]
    # A serial order: every run's tag exactly once, each process's runs in its own order.
    assert state["count"] == 2 * RUNS == len(log)
    assert sorted(log) == sorted(results[0]["completed"] + results[1]["completed"])
    for i in range(2):
        assert [t for t in log if t.startswith(f"p{i}-")] == results[i]["completed"]
    # The committed history is one chain (every checkpoint's parent is the one before it: no
    # run's checkpoint was built on a state another run had moved past), along which the count
    # rises one step at a time to 80.
    ids = [t.checkpoint["id"] for t in history]
    parents = [t.parent_config["configurable"]["checkpoint_id"] if t.parent_config else None for t in history]
    assert parents == [*ids[1:], None]
    counts = [t.checkpoint["channel_values"].get("count", 0) for t in reversed(history)]
    assert {b - a for a, b in itertools.pairwise(counts)} <= {0, 1}
    assert counts[-1] == 2 * RUNS
    watched = procs.read_json(watch_out)
    assert watched["problems"] == []
    assert watched["reads"] > 0
    print(
        f"{target.name}: conflicts {[r['conflicts'] for r in results]}, reader saw {watched['reads']} states"
    )


@pytest.mark.slow
def test_concurrent_put_writes_of_different_tasks_all_land(target: StoreTarget) -> None:
    with ObjectStoreSaver.from_url(target.url, **target.options) as saver:
        config = saver.put(
            {"configurable": {"thread_id": "w", "checkpoint_ns": ""}}, empty_checkpoint(), {}, {}
        )
        barrier = procs.context().Barrier(2)
        tasks = [[f"t{i}-{n:02d}" for n in range(25)] for i in range(2)]
        assert procs.run_all(
            write_tasks, [(target.url, target.options, config, t, barrier) for t in tasks]
        ) == [0, 0]
        # The same (task, idx) again is idempotent: the first write stays.
        saver.put_writes(config, [("count", "again")], "t0-00", task_path="~t0-00")
        pending = saver.get_tuple(config)
    assert pending is not None and pending.pending_writes is not None
    written = {(task, channel): value for task, channel, value in pending.pending_writes}
    assert len(pending.pending_writes) == 100
    assert all(written[(t, "count")] == t and written[(t, "log")] == [t] for t in tasks[0] + tasks[1])
    # In LangGraph's order: by task path, then task id, then index.
    assert [w[0] for w in pending.pending_writes[::2]] == sorted(tasks[0] + tasks[1])


def _stale_run_raises(saver_a: ObjectStoreSaver, saver_b: ObjectStoreSaver) -> None:
    """Run A is inside its node when run B completes on the same thread: A must fail."""
    inside, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    graph_a = counter_graph(saver_a)
    config = {"configurable": {"thread_id": "t"}}
    counter_graph(saver_b).invoke({"tag": "first"}, config)

    node = graph_a.builder.nodes["bump"].runnable  # type: ignore[attr-defined]
    original = node.func

    def slow_bump(state: Any) -> Any:
        inside.set()
        release.wait(30)
        return original(state)

    node.func = slow_bump

    def run_a() -> None:
        try:
            graph_a.invoke({"tag": "stale"}, config)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=run_a)
    worker.start()
    assert inside.wait(30)
    # A's input checkpoint may still be on its way: B retries as a user would.
    for _ in range(5):
        try:
            counter_graph(saver_b).invoke({"tag": "winner"}, config)
            break
        except CheckpointConflictError:
            continue
    release.set()
    worker.join(30)
    assert len(errors) == 1 and isinstance(errors[0], CheckpointConflictError), errors
    assert errors[0].thread_id == "t"
    state = counter_graph(saver_b).get_state(config).values
    assert state["log"] == ["first", "winner"] and state["count"] == 2


def test_langgraph_surfaces_the_conflict(local_store_target: StoreTarget) -> None:
    with (
        ObjectStoreSaver.from_url(local_store_target.url) as a,
        ObjectStoreSaver.from_url(local_store_target.url) as b,
    ):
        _stale_run_raises(a, b)


async def test_async_invoke_surfaces_the_conflict(memory_store_target: StoreTarget) -> None:
    async with ObjectStoreSaver.from_url(memory_store_target.url) as saver:
        graph = counter_graph(saver)
        config = {"configurable": {"thread_id": "t"}}
        await graph.ainvoke({"tag": "a"}, config)
        stale = await saver.aget_tuple(config)
        assert stale is not None
        await graph.ainvoke({"tag": "b"}, config)
        with pytest.raises(CheckpointConflictError):
            await saver.aput(stale.config, empty_checkpoint(), {"source": "loop", "step": 9}, {})


def test_a_fork_is_explicit(memory_store_target: StoreTarget) -> None:
    with ObjectStoreSaver.from_url(memory_store_target.url) as saver:
        graph = counter_graph(saver)
        config = {"configurable": {"thread_id": "t"}}
        for tag in ("a", "b", "c"):
            graph.invoke({"tag": tag}, config)
        old = next(s for s in graph.get_state_history(config) if s.values.get("count") == 1)
        with pytest.raises(CheckpointConflictError):
            graph.invoke({"tag": "x"}, old.config)
        forked = {"configurable": {**old.config["configurable"], FORK: True}}
        assert graph.invoke({"tag": "x"}, forked)["log"] == ["a", "x"]
        assert graph.get_state(config).values["log"] == ["a", "x"]
        latest = saver.get_tuple(config)
        assert latest is not None and FORK not in latest.metadata


def test_two_first_runs_on_a_new_thread_conflict(memory_store_target: StoreTarget) -> None:
    with ObjectStoreSaver.from_url(memory_store_target.url) as saver:
        config = {"configurable": {"thread_id": "new", "checkpoint_ns": ""}}
        saver.put(config, empty_checkpoint(), {"source": "input", "step": -1}, {})
        with pytest.raises(CheckpointConflictError):
            saver.put(config, empty_checkpoint(), {"source": "input", "step": -1}, {})


def test_delete_is_all_or_nothing_for_readers(local_store_target: StoreTarget) -> None:
    url = local_store_target.url
    with ObjectStoreSaver.from_url(url) as saver:
        graph = counter_graph(saver)
        config = {"configurable": {"thread_id": "t"}}
        for tag in ("a", "b"):
            graph.invoke({"tag": tag}, config)
        stale = saver.get_tuple(config)
        assert stale is not None
        saver.delete_thread("t")
        assert saver.get_tuple(config) is None
        assert list(saver.list(config)) == []
        # A writer that missed the deletion does not resurrect the thread.
        with pytest.raises(CheckpointConflictError):
            saver.put(stale.config, empty_checkpoint(), {"source": "loop", "step": 3}, {})
        # A new run on the same thread id starts afresh.
        assert graph.invoke({"tag": "c"}, config) == {"count": 1, "log": ["c"], "tag": "c"}
        fresh = len(list(saver.list(config)))
    # Nothing of the deleted history is left on disk: only the new run's three checkpoints.
    assert local_store_target.local_root is not None
    assert len(list(local_store_target.local_root.glob("langgraph/log/*/*/c/*.json"))) == fresh == 3


async def test_a_half_deleted_thread_reads_as_deleted(memory_store_target: StoreTarget) -> None:
    """A deleter that dies after flipping the head leaves a thread that reads as absent; the
    next ``expire_threads`` (our gc) finishes the deletion."""
    async with ObjectStoreSaver.from_url(memory_store_target.url) as saver:
        graph = counter_graph(saver)
        config = {"configurable": {"thread_id": "t"}}
        for tag in ("a", "b"):
            await graph.ainvoke({"tag": tag}, config)
        head = (await saver._list_heads(config))[0]
        await saver._call(saver._tombstone(head, retry=False))  # the deleter dies here
        assert await saver.aget_tuple(config) is None
        assert [t async for t in saver.alist(config)] == []
        store = open_store(memory_store_target.url)
        assert [o.key async for o in store.list("langgraph/log/")] != []
        assert await saver.aexpire_threads(timedelta(days=1)) == []  # nothing live to expire ...
        assert [o.key async for o in store.list("langgraph/log/")] == []  # ... but it finished the job


async def test_expire_threads_by_age_keeps_active_ones(memory_store_target: StoreTarget) -> None:
    async with ObjectStoreSaver.from_url(memory_store_target.url) as saver:
        graph = counter_graph(saver)
        for thread in ("old", "new"):
            await graph.ainvoke({"tag": thread}, {"configurable": {"thread_id": thread}})
        head = (await saver._list_heads({"configurable": {"thread_id": "new"}}))[0]
        expired = await saver.aexpire_threads(timedelta(hours=1), now=head.updated_at + timedelta(minutes=59))
        assert expired == []
        later = head.updated_at + timedelta(hours=2)
        assert sorted(await saver.aexpire_threads(timedelta(hours=1), now=later)) == ["new", "old"]
        assert await saver.aget_tuple({"configurable": {"thread_id": "old"}}) is None


async def test_requests_per_call_do_not_grow_with_history(memory_store_target: StoreTarget) -> None:
    counting = CountingStore(open_store(memory_store_target.url))
    async with ObjectStoreSaver(counting) as saver:
        graph = counter_graph(saver)
        config = {"configurable": {"thread_id": "t"}}
        ns_config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}

        async def costs() -> dict[str, dict[str, int]]:
            found = {}
            latest = await saver.aget_tuple(config)
            assert latest is not None
            counting.reset()
            await saver.aget_tuple(config)
            found["get_tuple"] = dict(counting.counts)
            counting.reset()
            listed = [t async for t in saver.alist(ns_config, limit=3)]
            assert len(listed) == 3
            found["list3"] = dict(counting.counts)
            found["list3_writes"] = {"get": sum(len(t.pending_writes or ()) for t in listed)}
            counting.reset()
            meta = {"source": "update", "step": latest.metadata["step"] + 1}
            await saver.aput(latest.config, empty_checkpoint(), meta, {})
            found["put"] = dict(counting.counts)
            return found

        for tag in ("a", "b"):
            await graph.ainvoke({"tag": tag}, config)
        young = await costs()
        for n in range(30):
            await graph.ainvoke({"tag": f"t{n}"}, config)
        assert await costs() == young
    assert young["put"] == {"put_if_absent": 1, "put_if_version": 1}
    assert young["get_tuple"] == {"get": 1, "list": 1}
    # The head, three checkpoints and their pending writes; one LIST for them, one per writes.
    assert young["list3"] == {"get": 1 + 3 + young["list3_writes"]["get"], "list": 1 + 3}
