"""``objstore-wfp pause``, ``unpause``, ``signal``, and what ``show`` says an instance waits for."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from objstore_wfp import ObjectStoreBackend
from objstore_wfp.cli.main import ExitCode, main
from objstore_wfp.runtime import Client, Flow, Step, Worker


def prepare(x: Any) -> Any:
    return x


NAP = Flow("nap").step(prepare).delay(3600)
ASK = Flow("ask").step(prepare).wait_for_signal("approval", timeout=600).step(Step("done", prepare))


@pytest.fixture
def store(tmp_path: Path) -> str:
    """``napping`` at a one-hour delay, ``asking`` waiting for ``approval`` (timeout 10 min)."""
    url = str(tmp_path / "store")

    async def setup() -> None:
        async with ObjectStoreBackend.from_url(url) as backend:
            client = Client(backend, [NAP, ASK])
            await client.submit(NAP, 1, instance_id="napping")
            await client.submit(ASK, 2, instance_id="asking")
            await Worker(backend, [NAP, ASK], poll_interval=0.01).run_until_idle()

    asyncio.run(setup())
    return url


def show(capsys: pytest.CaptureFixture[str], store: str, instance_id: str) -> tuple[str, Any]:
    assert main(["show", instance_id, "--store", store]) == 0
    text = capsys.readouterr().out
    assert main(["show", instance_id, "--store", store, "--json"]) == 0
    return text, json.loads(capsys.readouterr().out)


def test_show_says_what_an_instance_waits_for(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    text, doc = show(capsys, store, "napping")
    assert re.search(
        r"^waiting    delay delay-1 until [-0-9: ]+ \(in 3[56]\d\d\.\ds\)$", text, re.MULTILINE
    ), text
    assert doc["waiting"]["kind"] == "delay" and doc["waiting"]["step"] == "delay-1"
    assert doc["paused"] is None and doc["pending_signals"] == []
    text, doc = show(capsys, store, "asking")
    assert "waiting    signal approval at step wait-approval, timeout " in text
    assert doc["waiting"] == {
        "kind": "signal",
        "step": "wait-approval",
        "signal": "approval",
        "timeout_at": doc["waiting"]["timeout_at"],
    }


def test_pause_unpause_and_signal_from_the_command_line(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pause", "asking", "--reason", "audit", "--store", store]) == 0
    assert capsys.readouterr().out == "asking: paused (audit, by objstore-wfp cli)\n"
    text, doc = show(capsys, store, "asking")
    assert "paused     audit (by objstore-wfp cli, at " in text
    assert doc["paused"]["reason"] == "audit"
    assert (
        main(["signal", "asking", "approval", "--payload", '{"ok": true}', "--store", store, "--json"]) == 0
    )
    sent = json.loads(capsys.readouterr().out)
    assert (sent["name"], sent["payload"]) == ("approval", {"ok": True})
    text, doc = show(capsys, store, "asking")
    assert "pending signals" in text and '{"ok":true}' in text
    assert [s["seq"] for s in doc["pending_signals"]] == [sent["seq"]]
    assert main(["unpause", "asking", "--store", store]) == 0
    assert capsys.readouterr().out == "asking: resumed\n"

    async def finish() -> Any:
        async with ObjectStoreBackend.from_url(store) as backend:
            worker = Worker(backend, [NAP, ASK], poll_interval=0.01, max_poll_interval=0.05)
            running = asyncio.ensure_future(worker.run_forever(handle_signals=False))
            try:
                return await Client(backend, [ASK]).result("asking", timeout=10)
            finally:
                worker.stop()
                await running

    assert asyncio.run(finish()) == {"ok": True}
    assert main(["pause", "asking", "--store", store]) == ExitCode.CONFLICT
    assert "asking" in capsys.readouterr().err
