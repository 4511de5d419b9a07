"""Real servers the tests run against (moto, LocalStack, Azurite, fake-gcs-server, ...), started
and stopped by session fixtures, bound to 127.0.0.1 only.

A missing server skips its tests, unless ``OBJSTORE_WFP_REQUIRE_SERVICES=1`` (set by ``make test``)
makes it a failure: CI must never pass by skipping.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import NoReturn

import pytest

#: The repository root: install scripts put servers under ``REPO_ROOT / ".services"``.
REPO_ROOT = Path(__file__).resolve().parents[2]


def services_required() -> bool:
    """Whether a missing server must fail the tests instead of skipping them."""
    return os.environ.get("OBJSTORE_WFP_REQUIRE_SERVICES") == "1"


def service_unavailable(reason: str) -> NoReturn:
    """Skip (or fail, when services are required) because a server cannot be had."""
    if services_required():
        pytest.fail(f"{reason} (OBJSTORE_WFP_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_http(url: str, timeout: float, *, alive: object = None) -> bool:
    """Poll ``url`` until it answers with a status below 500, for at most ``timeout`` seconds.

    ``alive`` may be a ``subprocess.Popen``: polling stops early when that process has exited.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and alive.poll() is not None:  # type: ignore[attr-defined]
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return True
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def stop_process_group(
    process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 10
) -> None:
    """Signal a server's whole process group (servers fork helpers), then kill it if it lingers
    past ``grace`` seconds. Servers here hold nothing worth a slow shutdown."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


def log_tail(path: Path) -> str:
    """The end of a server's log, for the message of a failed start."""
    try:
        return path.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"
