"""Azurite (the Azure Storage emulator, blob service only) for the tests, installed with npm into
``.services/azurite`` by ``scripts/services/install-azurite.sh`` and run as its own process on
127.0.0.1 with in-memory persistence, started once per test session.

Fixtures (registered by ``tests/conftest.py``):

- ``azurite``: an :class:`AzuriteServer`;
- ``azure_container``: a fresh, empty container on it for one test (an :class:`AzureContainer`).

Azurite enforces everything the Azure adapter relies on: ``If-None-Match: *``, ``If-Match`` on
writes and on deletes.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.servers import REPO_ROOT, free_port, service_unavailable, stop_process_group, wait_for_http

AZURITE_BIN = REPO_ROOT / ".services" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
#: The emulator's fixed development account and key (public, documented by Microsoft).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

#: Start-up times measured by the fixtures (seconds), for the report.
STARTUP_SECONDS: dict[str, float] = {}


@dataclass(frozen=True)
class AzuriteServer:
    """Where Azurite's blob service listens."""

    url: str  # http://127.0.0.1:PORT/devstoreaccount1 (path-style account)

    @property
    def connection_string(self) -> str:
        """A connection string for the development account on this server."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.url};"
        )

    def storage_options(self) -> dict[str, Any]:
        """Options for ``AzureBlobStore`` / ``ObjectStoreBackend.from_url``."""
        return {"connection_string": self.connection_string}

    def create_container(self, prefix: str = "t") -> str:
        """Create a container with a unique name and return the name."""
        from azure.storage.blob import BlobServiceClient

        name = f"{prefix}-{uuid.uuid4().hex[:16]}"
        with BlobServiceClient.from_connection_string(self.connection_string) as service:
            service.create_container(name)
        return name


@dataclass(frozen=True)
class AzureContainer:
    """A fresh container on Azurite."""

    server: AzuriteServer
    name: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    def url(self, prefix: str = "") -> str:
        """``az://container/prefix``."""
        return f"az://{self.name}/{prefix}".rstrip("/")


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    """An Azurite blob service process, in memory."""
    if not AZURITE_BIN.exists():
        service_unavailable(
            f"Azurite not installed at {AZURITE_BIN}: run scripts/services/install-azurite.sh"
        )
    if shutil.which("node") is None:
        service_unavailable("node not found: Azurite needs Node.js")
    workdir = tmp_path_factory.mktemp("azurite")  # its working directory: nothing is persisted
    log = workdir / "azurite.log"
    port = free_port()
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(AZURITE_BIN),
                *("--blobHost", "127.0.0.1", "--blobPort", str(port)),
                *("--inMemoryPersistence", "--skipApiVersionCheck", "--disableTelemetry", "--silent"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}/{ACCOUNT}"
        # Any answer below 500 (an anonymous list is refused with 403) means it is serving.
        if not wait_for_http(f"{url}?comp=list", 60, alive=process):
            service_unavailable(f"Azurite did not start on {url}: {log.read_text(errors='replace')}")
        STARTUP_SECONDS["azurite"] = time.monotonic() - started
        yield AzuriteServer(url)
    finally:
        stop_process_group(process)


@pytest.fixture
def azure_container(azurite: AzuriteServer) -> AzureContainer:
    """A fresh, empty container on Azurite, with the storage options to open it."""
    return AzureContainer(azurite, azurite.create_container(), azurite.storage_options())


@pytest.fixture(scope="session")
def azure_target_container(azurite: AzuriteServer) -> str:
    """One container for the backend tests of a session; each target is a fresh prefix in it."""
    return azurite.create_container("hard")


@pytest.fixture
def azure_store_target(azurite: AzuriteServer, azure_target_container: str) -> Any:
    """A fresh root on Azurite as a ``tests.backends.StoreTarget`` (for ``STORE_TARGETS``)."""
    from tests.backends import StoreTarget

    return StoreTarget(
        "azure", f"az://{azure_target_container}/{secrets.token_hex(8)}", azurite.storage_options()
    )
