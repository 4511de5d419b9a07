"""The flows the Lambda worker runs: replace with your own (``FLOWS`` is what ``handler.py``
imports). Every process that submits or runs a flow must build the same flow, so put it in a
module both the submitter and the function import.

Task functions should be idempotent: a task runs again if its invocation is killed mid-task
(execution is at least once; recording is exactly once).
"""

from __future__ import annotations

from typing import Any

from objstore_wfp.runtime import Flow


def receive(order: dict[str, Any]) -> dict[str, Any]:
    return {"id": order["id"], "items": list(order["items"])}


def price(order: dict[str, Any]) -> int:
    return 10 * sum(order["items"])


def stock(order: dict[str, Any]) -> bool:
    return all(quantity <= 5 for quantity in order["items"])


def decide(checks: dict[str, Any]) -> dict[str, Any]:  # a join gets {branch name: output}
    return {"total": checks["price"], "ship": checks["stock"]}


ORDER = Flow("lambda-order").step(receive).fork(price, stock).join(decide)
FLOWS = [ORDER]
