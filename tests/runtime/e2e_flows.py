"""Flows the end-to-end tests run in worker processes (imported by ``--flow``)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from objstore_wfp.runtime import Flow

#: Set in a worker's environment to make ``hold`` hang, so the test can kill or cancel it mid-task.
HANG_ENV = "E2E_HANG"


async def split(n: int) -> dict[str, int]:
    await asyncio.sleep(0.02)
    return {"n": n}


async def hold(x: dict[str, int]) -> int:
    if os.environ.get(HANG_ENV):
        await asyncio.sleep(60)
    await asyncio.sleep(0.05)
    return x["n"] * 10


def double(x: dict[str, int]) -> int:
    return x["n"] * 2


def join(outputs: dict[str, int]) -> dict[str, Any]:
    return {"hold": outputs["hold"], "double": outputs["double"]}


def finish(x: dict[str, Any]) -> int:
    return int(x["hold"] + x["double"])


FLOW = Flow("e2e").step(split).fork(hold, double).join(join).step(finish)


def expected(n: int) -> int:
    return n * 12
