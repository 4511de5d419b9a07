"""S3 servers for the tests: ``moto_server`` and LocalStack, each run as its own process on
127.0.0.1, started once per test session and killed (whole process group) at the end.

Fixtures (registered by ``tests/conftest.py``):

- ``moto_s3`` / ``localstack_s3``: an :class:`S3Endpoint`;
- ``s3_endpoint``: parametrized over both servers (``[moto]``, ``[localstack]``);
- ``s3_bucket``: a fresh, empty bucket on ``s3_endpoint`` for one test (an :class:`S3Bucket`);
- ``faulty_s3``: a fault-injecting proxy in front of moto_server and a fresh bucket (a
  :class:`FaultyS3`); it injects nothing until its ``proxy.rate`` is raised.

``OBJSTORE_WFP_LOCALSTACK_URL=http://127.0.0.1:4566`` uses an already running LocalStack (for
example ``docker compose -f localstack-compose.yml up``) instead of starting one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import botocore.exceptions
import botocore.session
import pytest

from tests.servers import (
    REPO_ROOT,
    free_port,
    log_tail,
    service_unavailable,
    stop_process_group,
    wait_for_http,
)
from tests.servers.faultproxy import FaultProxy

LOCALSTACK_URL_ENV = "OBJSTORE_WFP_LOCALSTACK_URL"
LOCALSTACK_VENV = REPO_ROOT / ".services" / "localstack-venv"
REGION = "us-east-1"

#: Start-up times measured by the fixtures (seconds), for the report.
STARTUP_SECONDS: dict[str, float] = {}


@dataclass(frozen=True)
class S3Endpoint:
    """Where an S3-compatible server listens, and the credentials it accepts."""

    name: str
    url: str
    key: str = "test"
    secret: str = "test"
    #: Whether DeleteObject honours If-Match (LocalStack answers 501 instead).
    conditional_delete: bool = True

    def storage_options(self) -> dict[str, Any]:
        """Options for ``S3Store`` / ``ObjectStoreBackend.from_url``."""
        return {
            "endpoint_url": self.url,
            "key": self.key,
            "secret": self.secret,
            "client_kwargs": {"region_name": REGION},
        }

    def client(self) -> Any:
        """A plain synchronous botocore S3 client, for setting up and inspecting from tests."""
        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
            region_name=REGION,
        )

    def create_bucket(self, prefix: str = "t") -> str:
        """Create a bucket with a unique name and return the name."""
        name = f"{prefix}-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name


@dataclass(frozen=True)
class S3Bucket:
    """A fresh bucket on an endpoint."""

    endpoint: S3Endpoint
    name: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    def url(self, prefix: str = "") -> str:
        """``s3://bucket/prefix``."""
        return f"s3://{self.name}/{prefix}".rstrip("/")


@dataclass(frozen=True)
class FaultyS3:
    """moto_server behind a :class:`~tests.servers.faultproxy.FaultProxy`."""

    proxy: FaultProxy
    #: The proxy's address, with moto's credentials.
    endpoint: S3Endpoint
    #: A fresh bucket, created directly on moto (no faults).
    bucket: str


def _supports_conditional_delete(endpoint: S3Endpoint) -> bool:
    """Ask the server: a DeleteObject with a wrong If-Match is refused (412) where conditional
    delete exists, and answered 501 where it does not (LocalStack up to at least 2026.3)."""
    client = endpoint.client()
    bucket = endpoint.create_bucket("probe")
    client.put_object(Bucket=bucket, Key="k", Body=b"x")
    try:
        client.delete_object(Bucket=bucket, Key="k", IfMatch='"0123456789abcdef0123456789abcdef"')
    except botocore.exceptions.ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 412:
            return True
        if status == 501:
            return False
        raise
    finally:
        client.delete_object(Bucket=bucket, Key="k")
        client.delete_bucket(Bucket=bucket)
    raise AssertionError(f"{endpoint.url} deleted an object despite a wrong If-Match")


@contextlib.contextmanager
def moto_process(command: list[str], name: str = "moto") -> Iterator[S3Endpoint]:
    """Run a moto server ``command`` (``-H 127.0.0.1 -p <port>`` appended) as its own process
    group until the block ends; skip (or fail) if it does not answer within 30 s."""
    workdir = Path(tempfile.mkdtemp(prefix=f"objstore-wfp-{name}-"))
    log = workdir / "moto.log"
    port = free_port()
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        if not wait_for_http(f"{url}/moto-api/", 30, alive=process):
            service_unavailable(f"{name} did not start on {url}: {log_tail(log)}")
        STARTUP_SECONDS[name] = time.monotonic() - started
        yield S3Endpoint(name, url)
    finally:
        stop_process_group(process, grace=3)
        shutil.rmtree(workdir, ignore_errors=True)


#: moto_server with its object writes and deletes serialised, as S3 serialises them. moto's own
#: conditional PUT and DELETE are check-then-act across its request threads
#: (``tests/test_store_atomicity.py``): two racing ``If-None-Match: *`` PUTs can both win there,
#: which real S3 never allows, and a race test would then fail for moto's sake. Every other line
#: of moto runs unchanged. ``switch`` makes the server switch threads every ``switch`` seconds
#: (Python's default is 5 ms), to make races in the server visible.
def moto_command(*, atomic: bool = True, switch: float | None = None) -> list[str]:
    try:
        import moto.server  # noqa: F401
    except ImportError:
        service_unavailable("moto_server not found: pip install 'moto[server]'")
    lines = ["import sys, threading"]
    if switch is not None:
        lines.append(f"sys.setswitchinterval({switch!r})")
    if atomic:
        lines += [
            "from moto.s3.responses import S3Response",
            "lock = threading.Lock()",
            "def serial(method):",
            "    def run(self, *args, **kwargs):",
            "        with lock:",
            "            return method(self, *args, **kwargs)",
            "    return run",
            "S3Response._key_response_put = serial(S3Response._key_response_put)",
            "S3Response._key_response_delete = serial(S3Response._key_response_delete)",
        ]
    lines += ["from moto.server import main", "main(sys.argv[1:])"]
    return [sys.executable, "-c", "\n".join(lines)]


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[S3Endpoint]:
    """A ``moto_server`` process with atomic conditional writes (:func:`moto_command`), run out
    of process so its work is not interleaved with the test's threads."""
    with moto_process(moto_command()) as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def localstack_s3() -> Iterator[S3Endpoint]:
    """LocalStack (S3 only) on the host from ``.services/localstack-venv``
    (``scripts/services/install-localstack.sh``), or the one at ``$OBJSTORE_WFP_LOCALSTACK_URL``."""
    external = os.environ.get(LOCALSTACK_URL_ENV)
    if external:
        url = external.rstrip("/")
        if not wait_for_http(f"{url}/_localstack/health", 10):
            service_unavailable(f"no LocalStack answers at {LOCALSTACK_URL_ENV}={external}")
        endpoint = S3Endpoint("localstack", url)
        yield replace(endpoint, conditional_delete=_supports_conditional_delete(endpoint))
        return
    python = LOCALSTACK_VENV / "bin" / "python"
    if not python.exists():
        service_unavailable(
            f"LocalStack not installed in {LOCALSTACK_VENV}: run scripts/services/install-localstack.sh"
        )
    workdir = Path(tempfile.mkdtemp(prefix="objstore-wfp-localstack-"))
    (workdir / "fs").mkdir()
    (workdir / "tmp").mkdir()
    log = workdir / "localstack.log"
    port = free_port()
    env = {
        **os.environ,
        # Host mode, everything under the temp dir, S3 only, nothing bound beyond 127.0.0.1.
        "OVERRIDE_IN_DOCKER": "0",
        "FILESYSTEM_ROOT": str(workdir / "fs"),
        "TMPDIR": str(workdir / "tmp"),
        "GATEWAY_SERVER": "hypercorn",
        "GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "SERVICES": "s3",
        "EAGER_SERVICE_LOADING": "1",
        "DISABLE_EVENTS": "1",
        "DNS_ADDRESS": "0",
        "SKIP_SSL_CERT_DOWNLOAD": "1",
    }
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(python), "-m", "localstack.runtime.main"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=env,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        if not wait_for_http(f"{url}/_localstack/health", 90, alive=process):
            service_unavailable(f"LocalStack did not start on {url}: {log_tail(log)}")
        STARTUP_SECONDS["localstack"] = time.monotonic() - started
        endpoint = S3Endpoint("localstack", url)
        yield replace(endpoint, conditional_delete=_supports_conditional_delete(endpoint))
    finally:
        stop_process_group(process, grace=3)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session", params=["moto", "localstack"])
def s3_endpoint(request: pytest.FixtureRequest) -> S3Endpoint:
    """Each S3 server in turn."""
    endpoint: S3Endpoint = request.getfixturevalue(f"{request.param}_s3")
    return endpoint


@pytest.fixture
def faulty_s3(moto_s3: S3Endpoint) -> Iterator[FaultyS3]:
    """moto_server behind a fault proxy (seeded, rate 0 until the test raises it)."""
    bucket = moto_s3.create_bucket("faulty")
    with FaultProxy(moto_s3.url, seed=20261125) as proxy:
        yield FaultyS3(proxy, replace(moto_s3, name="moto+faults", url=proxy.url), bucket)


@pytest.fixture
def s3_bucket(s3_endpoint: S3Endpoint) -> S3Bucket:
    """A fresh, empty bucket on each S3 server in turn."""
    return S3Bucket(s3_endpoint, s3_endpoint.create_bucket(), s3_endpoint.storage_options())
