"""A ``moto_server`` process for the S3 figures, on 127.0.0.1 and a free port.

The test suite has its own fixture (``tests/servers/s3.py``), but that module needs pytest; the
benchmarks start the server themselves so they run without the test machinery.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REGION = "us-east-1"


@dataclass(frozen=True)
class Moto:
    url: str
    #: The server's process (and process group) id, to read its CPU time.
    pid: int = 0

    def storage_options(self) -> dict[str, Any]:
        return {
            "endpoint_url": self.url,
            "key": "test",
            "secret": "test",
            "client_kwargs": {"region_name": REGION},
        }

    def client_kwargs(self) -> dict[str, Any]:
        """Arguments for an aiobotocore/botocore ``create_client("s3", ...)``."""
        return {
            "endpoint_url": self.url,
            "aws_access_key_id": "test",
            "aws_secret_access_key": "test",
            "region_name": REGION,
        }

    def new_bucket(self) -> str:
        import botocore.session

        name = f"bench-{uuid.uuid4().hex[:12]}"
        botocore.session.get_session().create_client("s3", **self.client_kwargs()).create_bucket(Bucket=name)
        return name


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status < 500)
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


@contextlib.contextmanager
def moto_server() -> Iterator[Moto]:
    """Start ``moto_server`` (from the venv, else PATH) and kill its process group at exit."""
    binary = Path(sys.executable).parent / "moto_server"
    if not binary.exists():
        found = shutil.which("moto_server")
        if found is None:
            raise RuntimeError("moto_server not found: pip install 'moto[server]'")
        binary = Path(found)
    workdir = Path(tempfile.mkdtemp(prefix="objstore-wfp-bench-moto-"))
    port = free_port()
    with (workdir / "moto.log").open("wb") as log:
        process = subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while not _answers(f"{url}/moto-api/"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not start: {(workdir / 'moto.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield Moto(url, process.pid)
    finally:
        stop_group(process)
        shutil.rmtree(workdir, ignore_errors=True)


def stop_group(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Signal a server started with ``start_new_session=True`` and its helpers, then kill the
    group if it lingers for 10 seconds."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


async def count_http(store: Any) -> Counter[str]:
    """Count every HTTP request an :class:`~objstore_wfp.stores.s3.S3Store` sends, by S3 operation
    (``PutObject``, ``GetObject``, ...), retries and the adapter's own checks included: what S3
    would bill. Uses the store's private client accessor: this is a measuring tool."""
    counts: Counter[str] = Counter()
    client = await store._client()

    def sent(event_name: str, **_: Any) -> None:
        counts[event_name.rsplit(".", 1)[-1]] += 1

    client.meta.events.register("before-send.s3", sent)
    return counts
