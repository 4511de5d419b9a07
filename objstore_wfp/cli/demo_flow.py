"""The demo's sample flow: receive an order, check price, stock and fraud in parallel, decide,
notify. Each task sleeps a little to simulate work (``OBJSTORE_WFP_DEMO_WORK`` seconds on
average, default 0.4); outputs depend only on the order number, so the demo can check them."""

from __future__ import annotations

import os
import random
import time
from typing import Any

from objstore_wfp.runtime import Flow

WORK_ENV = "OBJSTORE_WFP_DEMO_WORK"


def _work() -> None:
    mean = float(os.environ.get(WORK_ENV, "0.4"))
    time.sleep(random.uniform(0.6 * mean, 1.4 * mean))


def receive(order: int) -> dict[str, Any]:
    _work()
    return {"order": order, "items": [order % 7 + 1, order % 5 + 2]}


def price(order: dict[str, Any]) -> int:
    _work()
    return sum(10 * item for item in order["items"])


def stock(order: dict[str, Any]) -> bool:
    _work()
    return bool(order["order"] % 9 != 0)


def fraud(order: dict[str, Any]) -> float:
    _work()
    return round((int(order["order"]) * 37 % 100) / 100, 2)


def decide(checks: dict[str, Any]) -> dict[str, Any]:
    _work()
    approved = checks["stock"] and checks["fraud"] < 0.9
    return {"total": checks["price"], "approved": approved}


def notify(decision: dict[str, Any]) -> dict[str, Any]:
    _work()
    return {**decision, "notified": True}


FLOW = Flow("demo-order").step(receive).fork(price, stock, fraud).join(decide).step(notify)

#: Tasks one instance runs.
TASKS_PER_INSTANCE = len(FLOW.task_names())


def expected_output(order: int) -> dict[str, Any]:
    """What a correct run of the flow returns for ``order``."""
    items = [order % 7 + 1, order % 5 + 2]
    approved = order % 9 != 0 and round((order * 37 % 100) / 100, 2) < 0.9
    return {"total": sum(10 * i for i in items), "approved": approved, "notified": True}
