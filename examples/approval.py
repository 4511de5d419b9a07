"""An approval flow: ask a person, wait (holding no worker) for their answer with a timeout,
act on it, then a durable cooling-off delay before the order is released.

    request_approval -> wait for signal "approval" (timeout: no answer = rejected)
                     -> route on the verdict: charge | notify_rejection
                     -> delay "cool-off" -> release

Run workers for it and answer from the command line::

    objstore-wfp worker --store ./wfp-data --flow examples.approval:FLOW
    python -m examples.approval submit order-1 250 --store ./wfp-data
    objstore-wfp show order-1 --store ./wfp-data        # waiting: signal approval, timeout ...
    objstore-wfp signal order-1 approval --payload '{"approved": true, "by": "ana"}' --store ./wfp-data

``python -m examples.approval`` alone runs a self-contained demonstration in a temporary folder
with short durations: one order is approved by a signal, another times out.

The wait's output is the signal's payload; what later steps need from before the wait travels
with the signal (here the approver answers with the verdict and their name). Durations are not
part of the flow's definition hash: workers built with other durations run the same instances,
and a wait's timeout or a delay's wake time is fixed, with the durations of the worker that
moves the instance there, when it gets there.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from datetime import timedelta
from typing import Any

from objstore_wfp import ObjectStoreBackend
from objstore_wfp.runtime import Client, Flow, Worker


def request_approval(order: dict[str, Any]) -> dict[str, Any]:
    # A real flow would e-mail the approver a link that sends the signal.
    return {"order": order["id"], "amount": order["amount"]}


def no_answer(request: dict[str, Any]) -> dict[str, Any]:
    """The timeout path: nobody answered in time, so the order is rejected."""
    return {"approved": False, "by": "timeout"}


def verdict(answer: dict[str, Any]) -> str:
    return "approved" if answer.get("approved") else "rejected"


def charge(answer: dict[str, Any]) -> dict[str, Any]:
    return {"status": "charged", "approved_by": answer.get("by")}


def notify_rejection(answer: dict[str, Any]) -> dict[str, Any]:
    return {"status": "rejected", "rejected_by": answer.get("by")}


def release(outcome: dict[str, Any]) -> dict[str, Any]:
    return {**outcome, "released": True}


def build(timeout: timedelta, cool_off: timedelta) -> Flow:
    """The approval flow with these durations (the same definition hash for any)."""
    return (
        Flow("approval")
        .step(request_approval)
        .wait_for_signal("approval", timeout=timeout, on_timeout=no_answer)
        .route(verdict, {"approved": charge, "rejected": notify_rejection})
        .delay(cool_off, name="cool-off")
        .step(release)
    )


FLOW = build(timeout=timedelta(days=1), cool_off=timedelta(minutes=10))


async def demonstrate() -> dict[str, Any]:
    """Two orders on a temporary store, with a 2 s timeout and a 1 s cooling-off: ``order-1``
    is approved by a signal, ``order-2`` times out. Returns their outputs."""
    flow = build(timeout=timedelta(seconds=2), cool_off=timedelta(seconds=1))
    async with ObjectStoreBackend.from_url(tempfile.mkdtemp()) as backend:
        client = Client(backend, [flow])
        for number, amount in ((1, 250), (2, 90)):
            await client.submit(flow, {"id": number, "amount": amount}, instance_id=f"order-{number}")
        worker = Worker(backend, [flow], poll_interval=0.1, max_poll_interval=0.2)
        running = asyncio.ensure_future(worker.run_forever(handle_signals=False))
        await client.send_signal("order-1", "approval", {"approved": True, "by": "ana"})
        outputs = {i: await client.result(i, timeout=30) for i in ("order-1", "order-2")}
        worker.stop()
        await running
    return outputs


async def _submit(store: str, instance_id: str, amount: int) -> None:
    async with ObjectStoreBackend.from_url(store) as backend:
        await Client(backend, [FLOW]).submit(
            FLOW, {"id": instance_id, "amount": amount}, instance_id=instance_id
        )
    print(f"submitted {instance_id}: answer with objstore-wfp signal {instance_id} approval --payload JSON")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.approval", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    submit = sub.add_parser("submit", help="submit an order for approval")
    submit.add_argument("instance_id")
    submit.add_argument("amount", type=int)
    submit.add_argument("--store", default="./wfp-data")
    args = parser.parse_args()
    if args.command == "submit":
        asyncio.run(_submit(args.store, args.instance_id, args.amount))
        return
    for instance_id, output in asyncio.run(demonstrate()).items():
        print(f"{instance_id}: {output}")


if __name__ == "__main__":
    main()
