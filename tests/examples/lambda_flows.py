"""Flows for the Lambda test, packaged as ``flows.py`` beside the example's handler.

Every execution of a task appends one line to ``$WFP_TEST_LOG`` (an ``O_APPEND`` write, so lines
from many processes never mix and a SIGKILL loses nothing already written). A job with
``"hang_once"`` hangs in its first task the first time it runs, so that the test can kill the
invocation mid-task.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from objstore_wfp.runtime import Flow


def _executed(task: str, job_id: int) -> None:
    line = json.dumps({"task": task, "job": job_id, "pid": os.getpid()}) + "\n"
    with open(os.environ["WFP_TEST_LOG"], "a") as log:
        log.write(line)


def first(job: dict[str, Any]) -> dict[str, int]:
    _executed("first", job["id"])
    if job.get("hang_once"):
        try:
            open(f"{os.environ['WFP_TEST_LOG']}.{job['id']}.hung", "x").close()
        except FileExistsError:
            pass
        else:
            time.sleep(3600)  # the test kills the invocation here
    return {"id": job["id"], "value": 10 * job["id"]}


def second(previous: dict[str, int]) -> int:
    _executed("second", previous["id"])
    return previous["value"] + 1


FLOWS = [Flow("lambda-test").step(first).step(second)]
