"""The Azure Blob adapter against Azurite (a real process), plus fault injection through a proxy.

Which check runs where: every interface operation, the store conformance suite, the probe
(create-if-absent, CAS and conditional delete are all enforced by Azurite), concurrent races in
one process and across processes: Azurite. Retries, lost responses and dropped connections:
Azurite behind a fault-injecting proxy. Nothing the adapter relies on needs a local double.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from objstore_wfp import ManualClock, ObjectStoreBackend
from objstore_wfp.errors import InvalidArgumentError, StoreUnavailableError
from objstore_wfp.stores import azure as azure_module
from objstore_wfp.stores._retry import RetryPolicy
from objstore_wfp.stores.azure import AzureBlobStore
from objstore_wfp.stores.probe import probe_store
from objstore_wfp.testing import BackendConformance
from objstore_wfp.testing.stores import StoreConformance
from tests.servers import free_port
from tests.servers.azure import ACCOUNT, ACCOUNT_KEY, AzureContainer, AzuriteServer
from tests.servers.faults import FaultProxy, call_every_operation, fault_proxy

#: Quick retries: the faults below are injected a known number of times.
FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, request_timeout=10)


def _open(container: AzureContainer, prefix: str = "root", **options: object) -> AzureBlobStore:
    return AzureBlobStore(
        f"{container.name}/{prefix}", retry=FAST, **{**container.storage_options, **options}
    )


class TestAzureBlobStore(StoreConformance):
    @pytest.fixture
    def store_url(self, azure_container: AzureContainer) -> tuple[str, dict[str, Any]]:
        return f"az://{azure_container.name}/mp-{secrets.token_hex(4)}", azure_container.storage_options

    @pytest.fixture
    async def store(self, azure_container: AzureContainer) -> AsyncIterator[AzureBlobStore]:
        store = _open(azure_container)
        yield store
        await store.close()


@pytest.fixture
async def store(azure_container: AzureContainer) -> AsyncIterator[AzureBlobStore]:
    store = _open(azure_container)
    yield store
    await store.close()


@pytest.fixture
def proxy(azurite: AzuriteServer) -> Iterator[FaultProxy]:
    with fault_proxy(azurite.url.rsplit("/", 1)[0]) as proxy:
        yield proxy


@pytest.fixture
async def proxied(azure_container: AzureContainer, proxy: FaultProxy) -> AsyncIterator[AzureBlobStore]:
    connection_string = (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint={proxy.url}/{ACCOUNT};"
    )
    store = _open(azure_container, connection_string=connection_string)
    yield store
    await store.close()


def _puts(proxy: FaultProxy, name: str) -> int:
    return sum(1 for s in proxy.seen if s.method == "PUT" and name in s.path_qs)


# -- the emulator -------------------------------------------------------------------------------


async def test_probe_finds_every_condition_enforced(store: AzureBlobStore) -> None:
    report = await probe_store(store)
    assert (report.create_if_absent, report.compare_and_swap, report.conditional_delete) == (True, True, True)
    assert store.supports_conditional_delete
    assert [o async for o in store.list("")] == [], "the probe leaves nothing behind"


# -- the interface ----------------------------------------------------------------------------


async def test_versions_are_quoted_etags_everywhere(store: AzureBlobStore) -> None:
    v1 = await store.put("a/x", b"1")
    v2 = await store.put("a/x", b"1")
    assert v1.startswith('"') and v1 != v2, "identical bytes still get a new ETag"
    found = await store.get("a/x")
    assert found is not None and found.version == v2
    assert [(o.key, o.version) async for o in store.list("a/")] == [("a/x", v2)]


async def test_prefixes_isolate_stores(azure_container: AzureContainer) -> None:
    one, two, whole = (
        _open(azure_container, "one"),
        _open(azure_container, "one-two"),
        _open(azure_container, ""),
    )
    try:
        await one.put("k", b"1")
        await two.put("k", b"2")
        assert [o.key async for o in one.list("")] == ["k"]
        assert [o.key async for o in whole.list("")] == ["one-two/k", "one/k"]
        assert one.url == f"az://{azure_container.name}/one" and whole.url == f"az://{azure_container.name}"
    finally:
        for store in (one, two, whole):
            await store.close()


async def test_list_is_lazy_page_by_page(
    azure_container: AzureContainer,
    proxied: AzureBlobStore,
    proxy: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(azure_module, "_PAGE_SIZE", 2)
    for i in range(7):
        await proxied.put(f"p/{i}", b"x")
    proxy.clear()
    assert [o.key async for o in proxied.list("p/", start_after="p/1")] == [f"p/{i}" for i in range(2, 7)]
    assert sum(1 for s in proxy.seen if s.method == "GET") == 4
    proxy.clear()
    async for _ in proxied.list("p/"):
        break
    assert sum(1 for s in proxy.seen if s.method == "GET") == 1


async def test_credentials_options(azurite: AzuriteServer, azure_container: AzureContainer) -> None:
    by_key = AzureBlobStore(
        f"{azure_container.name}/k",
        retry=FAST,
        account_name=ACCOUNT,
        account_key=ACCOUNT_KEY,
        account_host=azurite.url,
    )
    try:
        assert await by_key.put_if_absent("x", b"1") is not None
    finally:
        await by_key.close()
    with pytest.raises(InvalidArgumentError, match="unknown Azure storage options"):
        AzureBlobStore("c/p", connection_string=azurite.connection_string, endpoint_url="x")
    with pytest.raises(InvalidArgumentError):
        AzureBlobStore("", connection_string=azurite.connection_string)


async def test_connection_string_from_environment(
    azurite: AzuriteServer, azure_container: AzureContainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    store = AzureBlobStore(f"{azure_container.name}/env", retry=FAST)
    try:
        assert await store.put_if_absent("x", b"1") is not None
    finally:
        await store.close()


async def test_bad_version_is_typed(store: AzureBlobStore) -> None:
    for version in ("", "*"):
        with pytest.raises(InvalidArgumentError):
            await store.put_if_version("k", b"x", version)


async def test_missing_container_is_store_unavailable(azurite: AzuriteServer) -> None:
    store = AzureBlobStore("no-such-container/p", retry=FAST, **azurite.storage_options())
    try:
        for operation in (store.get("k"), store.put("k", b"x")):
            with pytest.raises(StoreUnavailableError, match="not found"):
                await operation
    finally:
        await store.close()


async def test_unreachable_server_is_store_unavailable_with_cause() -> None:
    connection_string = (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{free_port()}/{ACCOUNT};"
    )
    store = AzureBlobStore("c/p", retry=FAST, connection_string=connection_string)
    try:
        with pytest.raises(StoreUnavailableError) as caught:
            await store.get("k")
        assert caught.value.__cause__ is not None
    finally:
        await store.close()


# -- races ------------------------------------------------------------------------------------


async def test_many_concurrent_creates_swaps_and_deletes_have_one_winner_each(store: AzureBlobStore) -> None:
    for round_ in range(5):
        key = f"race/{round_}"
        results = await asyncio.gather(*(store.put_if_absent(key, f"w{i}".encode()) for i in range(24)))
        assert sum(v is not None for v in results) == 1
        base = next(v for v in results if v is not None)
        swaps = await asyncio.gather(*(store.put_if_version(key, f"c{i}".encode(), base) for i in range(24)))
        assert sum(v is not None for v in swaps) == 1
        current = next(v for v in swaps if v is not None)
        deletes = await asyncio.gather(*(store.delete_if_version(key, current) for _ in range(8)))
        assert sum(deletes) >= 1 and await store.get(key) is None


# -- faults -----------------------------------------------------------------------------------


async def test_transient_errors_are_retried(proxied: AzureBlobStore, proxy: FaultProxy) -> None:
    version = await proxied.put("k", b"v")
    proxy.inject("GET", "/root/k", "reject", status=503, times=2)
    found = await proxied.get("k")
    assert found is not None and found.version == version
    proxy.inject("PUT", "/root/fresh", "reject", status=500, times=2)
    assert await proxied.put_if_absent("fresh", b"x") is not None


async def test_persistent_failure_raises_store_unavailable(
    proxied: AzureBlobStore, proxy: FaultProxy
) -> None:
    proxy.inject("GET", "/root/k", "reject", status=503, times=100)
    with pytest.raises(StoreUnavailableError) as caught:
        await proxied.get("k")
    assert caught.value.__cause__ is not None
    assert sum(1 for s in proxy.seen if s.fault) == FAST.attempts


async def test_access_denied_is_not_retried(proxied: AzureBlobStore, proxy: FaultProxy) -> None:
    proxy.inject("PUT", "/root/k", "reject", status=403)
    with pytest.raises(StoreUnavailableError, match="403"):
        await proxied.put("k", b"x")
    assert _puts(proxy, "/root/k") == 1


@pytest.mark.parametrize("mode", ["lose_response", "drop"])
async def test_create_whose_answer_was_lost_is_recognised_as_ours(
    proxied: AzureBlobStore, proxy: FaultProxy, mode: str
) -> None:
    proxy.inject("PUT", "/root/claim", mode)  # type: ignore[arg-type]
    version = await proxied.put_if_absent("claim", b"mine, nonce 1")
    assert version is not None, "the retry met our own write: that is a success, not a loss"
    found = await proxied.get("claim")
    assert found is not None and (found.data, found.version) == (b"mine, nonce 1", version)
    assert _puts(proxy, "/root/claim") == 2


async def test_cas_whose_answer_was_lost_is_recognised_as_ours(
    proxied: AzureBlobStore, proxy: FaultProxy
) -> None:
    base = await proxied.put("cas", b"base")
    proxy.inject("PUT", "/root/cas", "lose_response", status=500)
    version = await proxied.put_if_version("cas", b"mine, nonce 2", base)
    found = await proxied.get("cas")
    assert (
        version is not None
        and found is not None
        and (found.data, found.version) == (b"mine, nonce 2", version)
    )


async def test_ambiguous_retry_does_not_claim_someone_elses_object(
    proxied: AzureBlobStore, proxy: FaultProxy
) -> None:
    await proxied.put("taken", b"theirs")
    proxy.inject("PUT", "/root/taken", "reject", status=503)
    assert await proxied.put_if_absent("taken", b"mine") is None
    found = await proxied.get("taken")
    assert found is not None and found.data == b"theirs"


@pytest.mark.parametrize("mode", ["lose_response", "drop"])
async def test_conditional_delete_whose_answer_was_lost_reports_deleted(
    proxied: AzureBlobStore, proxy: FaultProxy, mode: str
) -> None:
    version = await proxied.put("d", b"x")
    proxy.inject("DELETE", "/root/d", mode)  # type: ignore[arg-type]
    assert await proxied.delete_if_version("d", version) is True
    assert await proxied.get("d") is None


# -- the backend on Azurite ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def azure_shared_container(azurite: AzuriteServer) -> str:
    """One container for the whole session; backend tests separate themselves by prefix."""
    return azurite.create_container("conf")


class TestObjectStoreOnAzure(BackendConformance):
    """The backend conformance suite on Azurite, which enforces conditional deletes."""

    @pytest.fixture
    async def backend(
        self, clock: ManualClock, azurite: AzuriteServer, azure_shared_container: str
    ) -> AsyncIterator[ObjectStoreBackend]:
        url = f"az://{azure_shared_container}/{secrets.token_hex(8)}"
        backend = ObjectStoreBackend.from_url(url, clock=clock, **azurite.storage_options())
        async with backend:
            yield backend
        if not backend._verify:  # the probe ran (on first use)
            assert backend.store.supports_conditional_delete is True


@pytest.mark.parametrize("status", [400, 401, 404, 409, 410, 412, 500])
async def test_any_answer_gives_a_result_or_a_backend_error(
    proxied: AzureBlobStore, proxy: FaultProxy, status: int
) -> None:
    """Whatever status the server answers, nothing but a BackendError escapes."""
    version = await proxied.put("k", b"x")
    for method in ("GET", "PUT", "DELETE"):
        proxy.inject(method, "", "reject", status=status, times=1000)
    await call_every_operation(proxied, version)


async def test_url_forms_open_the_same_store(azure_container: AzureContainer) -> None:
    from objstore_wfp.stores.urls import open_store

    name = azure_container.name
    for url in (f"az://{name}/u/v", f"abfs://{name}/u/v/", f"abfss://{name}/u/v"):
        store = open_store(url, **azure_container.storage_options)
        try:
            assert isinstance(store, AzureBlobStore) and store.url == f"az://{name}/u/v"
            await store.put("k", url.encode())
        finally:
            await store.close()
    # adlfs's container@account form names the account; nothing is sent until first use.
    store = open_store(f"abfs://{name}@myaccount.dfs.core.windows.net/p", account_key=ACCOUNT_KEY)
    try:
        assert store.url == f"az://{name}/p"
        assert isinstance(store, AzureBlobStore)
        service = store._connect().service
        assert service.account_name == "myaccount"
        assert service.url.startswith("https://myaccount.blob.core.windows.net")
    finally:
        await store.close()


async def test_account_key_from_environment(
    azurite: AzuriteServer, azure_container: AzureContainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", ACCOUNT_KEY)
    store = AzureBlobStore(f"{azure_container.name}/env", retry=FAST, account_host=azurite.url)
    try:
        assert await store.put_if_absent("x", b"1") is not None
    finally:
        await store.close()
    anonymous = AzureBlobStore(f"{azure_container.name}/env", retry=FAST, account_host=azurite.url, anon=True)
    try:
        with pytest.raises(StoreUnavailableError):  # the container is private: anon=True wins
            await anonymous.put("y", b"1")
    finally:
        await anonymous.close()
