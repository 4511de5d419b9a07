"""An AWS Lambda function that runs workflow tasks stored on S3: copy this file and ``flows.py``
into your deployment package (with ``objstore-wfp[s3]`` installed) and set the handler to
``handler.handler``. See README.md beside it for the settings.

Each invocation runs ``Worker.run_once()``: it finds available tasks, claims up to
``WFP_CONCURRENCY`` of them, runs them to the end while renewing their leases, records the
results and returns. An invocation with ``{"sweep": true}`` (from a scheduled rule), and the
first one after ``WFP_SWEEP_SECONDS`` in each warm environment, also sweeps: it advances
workflows whose worker died between recording a result and moving the workflow on.

Everything expensive is made once per execution environment, at import (the cold start): the
backend, its S3 client and connections, and the worker. Warm invocations reuse them: the
backend runs on one event loop of its own (``objstore_wfp.sync``), so connections survive from
one invocation to the next.
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import timedelta
from typing import Any

from flows import FLOWS  # your flows, packaged beside this file

from objstore_wfp.runtime import Worker, WorkerEvent
from objstore_wfp.sync import SyncBackend

log = logging.getLogger("objstore_wfp.lambda")
log.setLevel(logging.INFO)

STORE = os.environ["WFP_STORE"]  # s3://bucket/prefix
LEASE = timedelta(seconds=float(os.environ.get("WFP_LEASE_SECONDS", "60")))
CONCURRENCY = int(os.environ.get("WFP_CONCURRENCY", "4"))
SWEEP_SECONDS = float(os.environ.get("WFP_SWEEP_SECONDS", "900"))


def _log_event(event: WorkerEvent) -> None:
    # One JSON line per claim, start, record, takeover...: searchable in CloudWatch Logs.
    log.info(
        json.dumps(
            {
                "event": event.kind,
                "worker": event.worker_id,
                "instance": event.instance_id,
                "task": event.task_id,
                "token": event.token,
                "attempt": event.attempt,
                "detail": event.detail,
            }
        )
    )


BACKEND = SyncBackend.from_url(STORE)
WORKER = Worker(BACKEND.backend, FLOWS, lease=LEASE, concurrency=CONCURRENCY, on_event=_log_event)
_next_sweep = time.monotonic() + SWEEP_SECONDS


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Run what can be claimed now; sweep when asked or when due. Returns
    ``{"completed": tasks completed, "swept": workflows advanced, "worker": worker id}``."""
    global _next_sweep
    completed = BACKEND.run(WORKER.run_once())
    swept = 0
    if (isinstance(event, dict) and event.get("sweep")) or time.monotonic() >= _next_sweep:
        _next_sweep = time.monotonic() + SWEEP_SECONDS
        swept = BACKEND.run(WORKER.sweep())
    return {"completed": completed, "swept": swept, "worker": WORKER.worker_id}
