"""Flows with delays, signal waits, routes, loops and child flows, for the end-to-end tests
(worker processes import them with ``--flow tests.runtime.e2e_control_flows:FLOWS``)."""

from __future__ import annotations

import asyncio
from typing import Any

from objstore_wfp.runtime import Flow

#: Seconds the delay flow sleeps; short, so that lateness is measurable against the poll.
NAP = 1.5


async def prepare(x: Any) -> Any:
    # Long enough for a test to send a signal before the workflow reaches its wait.
    await asyncio.sleep(0.5)
    return x


def finish(x: Any) -> dict[str, Any]:
    return {"got": x}


def gave_up(x: Any) -> str:
    return "timed out"


def kind(x: dict[str, Any]) -> str:
    return str(x["kind"])


def small(x: dict[str, Any]) -> str:
    return f"small {x['n']}"


def large(x: dict[str, Any]) -> str:
    return f"large {x['n']}"


def other(x: dict[str, Any]) -> str:
    return f"other {x['n']}"


def bump(x: int) -> int:
    return x + 1


def reached_five(x: int) -> bool:
    return x >= 5


def triple(x: int) -> int:
    return 3 * x


async def slow(x: int) -> int:
    await asyncio.sleep(1.0)
    return x


DELAY = Flow("e2e-delay").step(bump).delay(NAP).step(finish)
SIGNAL = (
    Flow("e2e-signal")
    .step(prepare)
    .wait_for_signal("go", timeout=60, on_timeout=gave_up)
    .delay(1.0, name="linger")
    .step(finish)
)
QUICK = Flow("e2e-quick").step(prepare).wait_for_signal("go", timeout=1.0, on_timeout=gave_up).step(finish)
PAUSE = Flow("e2e-pause").step(slow).step(bump).step(finish)
ROUTE = Flow("e2e-route").route(kind, {"small": small, "large": large}, default=other)
LOOP = Flow("e2e-loop").loop(bump, until=reached_five, max_iterations=10).step(finish)
INNER = Flow("e2e-inner").step(triple).delay(0.3).step(bump)
PARENT = Flow("e2e-parent").step(bump).child(INNER, name="inner").step(finish)

FLOWS = [DELAY, SIGNAL, QUICK, PAUSE, ROUTE, LOOP, PARENT]
