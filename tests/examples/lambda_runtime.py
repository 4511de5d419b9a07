"""Runs a Lambda handler the way the AWS Lambda Python runtime does, for the tests.

``python lambda_runtime.py PACKAGE_DIR MODULE.FUNCTION``: imports the handler from the
deployment package directory once (the cold start), prints ``{"ready": ...}``, then for every
line of standard input (one JSON event per invocation) calls the handler in this same process
(warm reuse) and prints one JSON line, ``{"result": ...}`` or ``{"error": ...}``. Logs go to
standard error, as the real runtime sends them to CloudWatch. End of input ends the
environment (the process exits normally, as when Lambda retires it).
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import time
import uuid
from typing import Any


class Context:
    """The parts of Lambda's context object a handler commonly reads."""

    def __init__(self, timeout_ms: int = 900_000) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = "objstore-wfp-test"
        self._deadline = time.monotonic() + timeout_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def main() -> None:
    package, target = sys.argv[1], sys.argv[2]
    sys.path.insert(0, package)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    started = time.monotonic()
    module_name, _, function_name = target.rpartition(".")
    handler: Any = getattr(importlib.import_module(module_name), function_name)
    print(json.dumps({"ready": round(time.monotonic() - started, 3)}), flush=True)
    for line in sys.stdin:
        event = json.loads(line)
        try:
            answer = {"result": handler(event, Context())}
        except Exception as exc:
            logging.exception("invocation failed")
            answer = {"error": repr(exc)}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
