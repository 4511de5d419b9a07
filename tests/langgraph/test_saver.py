"""The saver's edges: bad input and damaged objects give typed errors; prune spares a put in flight."""

from __future__ import annotations

import pytest
from langgraph.checkpoint.base import empty_checkpoint

from objstore_wfp.errors import ConflictError, InvalidArgumentError, SerializationError
from objstore_wfp.integrations.langgraph import ObjectStoreSaver
from objstore_wfp.integrations.langgraph._format import Slot
from objstore_wfp.stores.urls import open_store
from tests.backends import StoreTarget
from tests.langgraph.graphs import counter_graph


async def test_bad_input_is_refused_before_any_write(memory_store_target: StoreTarget) -> None:
    async with ObjectStoreSaver.from_url(memory_store_target.url) as saver:
        with pytest.raises(InvalidArgumentError, match="thread_id"):
            await saver.aget_tuple({"configurable": {}})
        bad = {**empty_checkpoint(), "id": "not-a-uuid"}
        with pytest.raises(InvalidArgumentError, match="UUID"):
            await saver.aput({"configurable": {"thread_id": "t"}}, bad, {}, {})  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match="checkpoint_id"):
            await saver.aput_writes({"configurable": {"thread_id": "t"}}, [("c", 1)], "task")
        with pytest.raises(InvalidArgumentError, match="strategy"):
            await saver.aprune(["t"], strategy="keep_some")
        assert [o async for o in open_store(memory_store_target.url).list("langgraph/")] == []


async def test_a_damaged_head_names_itself(memory_store_target: StoreTarget) -> None:
    async with ObjectStoreSaver.from_url(memory_store_target.url) as saver:
        config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
        await saver.aput(config, empty_checkpoint(), {"source": "input", "step": -1}, {})
        key = Slot("t", "").head_key
        await open_store(memory_store_target.url).put(key, b'{"format": 1, "kind": "langgraph-head"')
        with pytest.raises(SerializationError, match=key):
            await saver.aget_tuple(config)


async def test_copy_onto_an_existing_thread_is_refused(memory_store_target: StoreTarget) -> None:
    async with ObjectStoreSaver.from_url(memory_store_target.url) as saver:
        graph = counter_graph(saver)
        for thread in ("a", "b"):
            await graph.ainvoke({"tag": thread}, {"configurable": {"thread_id": thread}})
        with pytest.raises(ConflictError, match="already exists"):
            await saver.acopy_thread("a", "b")
        state = await graph.aget_state({"configurable": {"thread_id": "b"}})
        assert state.values["log"] == ["b"]


async def test_prune_keeps_the_latest_and_a_put_in_flight(memory_store_target: StoreTarget) -> None:
    async with ObjectStoreSaver.from_url(memory_store_target.url) as saver:
        graph = counter_graph(saver)
        config = {"configurable": {"thread_id": "t"}}
        for tag in ("a", "b"):
            await graph.ainvoke({"tag": tag}, config)
        latest = await saver.aget_tuple(config)
        assert latest is not None
        # A put that has written its checkpoint object but not yet moved the head.
        in_flight = empty_checkpoint()
        slot = Slot("t", "")
        await open_store(memory_store_target.url).put(slot.checkpoint_key(in_flight["id"]), b"{}")
        await saver.aprune(["t"])
        assert [t.checkpoint["id"] async for t in saver.alist(config)] == [latest.checkpoint["id"]]
        kept = [o.key async for o in open_store(memory_store_target.url).list(slot.checkpoints_prefix)]
        assert kept == [slot.checkpoint_key(in_flight["id"]), slot.checkpoint_key(latest.checkpoint["id"])]
        assert (await graph.ainvoke({"tag": "c"}, config))["log"] == ["a", "b", "c"]
