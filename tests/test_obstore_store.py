"""The obstore adapter (``s3+obstore://``, ``az+obstore://``, ``gs+obstore://``) on real servers:
the store conformance suite and the probe on moto_server, LocalStack and Azurite, the backend
conformance suite on moto_server and Azurite, what happens on fake-gcs-server, option mapping, and
refused conditional writes after injected faults. The races, zombies, crash and request-budget
tests run through it too (the ``moto-obstore`` store target in ``tests/backends.py``), and so does
the fault-proxy run of ``tests/test_s3_faults.py``."""

from __future__ import annotations

import asyncio
import json
import secrets
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from objstore_wfp import ManualClock, ObjectStoreBackend
from objstore_wfp.errors import InvalidArgumentError, StoreUnavailableError, UnsupportedStoreError
from objstore_wfp.stores._retry import RetryPolicy
from objstore_wfp.stores.base import ListedObject, StoredObject
from objstore_wfp.stores.obstore import ObstoreStore
from objstore_wfp.stores.probe import probe_store
from objstore_wfp.stores.urls import open_store
from objstore_wfp.testing import BackendConformance
from objstore_wfp.testing.stores import StoreConformance
from tests.servers.azure import ACCOUNT, ACCOUNT_KEY, AzuriteServer
from tests.servers.faultproxy import FaultProxy
from tests.servers.faults import call_every_operation, fault_proxy
from tests.servers.gcs import GCSServer
from tests.servers.s3 import S3Endpoint

#: Quick retries: the faults below are injected a known number of times.
FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, request_timeout=10)


@pytest.fixture(params=["moto", "localstack", "azurite"])
def root(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """``(url, storage_options)`` of a fresh, empty root on each server, through obstore."""
    if request.param == "azurite":
        azurite: AzuriteServer = request.getfixturevalue("azurite")
        container = azurite.create_container()
        return f"az+obstore://{container}/root-{secrets.token_hex(4)}", azurite.storage_options()
    endpoint: S3Endpoint = request.getfixturevalue(f"{request.param}_s3")
    bucket = endpoint.create_bucket()
    return f"s3+obstore://{bucket}/root-{secrets.token_hex(4)}", endpoint.storage_options()


class TestObstoreConformance(StoreConformance):
    """The store conformance suite, once per server, on a store the probe accepted."""

    @pytest.fixture
    async def store(self, root: tuple[str, dict[str, Any]]) -> AsyncIterator[ObstoreStore]:
        url, options = root
        store = open_store(url, retry=FAST, **options)
        assert isinstance(store, ObstoreStore)
        report = await probe_store(store)
        assert (report.create_if_absent, report.compare_and_swap, report.conditional_delete) == (
            True,
            True,
            False,
        ), report
        yield store
        await store.close()

    @pytest.fixture
    def store_url(self, root: tuple[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        url, options = root
        return f"{url}/mp-{secrets.token_hex(4)}", options


@pytest.fixture(scope="session", params=["moto", "azurite"])
def shared_root(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """One bucket (container) per server for the session, through obstore; tests take prefixes."""
    if request.param == "azurite":
        azurite: AzuriteServer = request.getfixturevalue("azurite")
        return f"az+obstore://{azurite.create_container('conf')}", azurite.storage_options()
    moto: S3Endpoint = request.getfixturevalue("moto_s3")
    return f"s3+obstore://{moto.create_bucket('conf')}", moto.storage_options()


class TestObjectStoreThroughObstore(BackendConformance):
    """The backend conformance suite through obstore, on moto_server and Azurite (the backend
    deletes unconditionally: obstore has no conditional delete)."""

    @pytest.fixture
    async def backend(
        self, clock: ManualClock, shared_root: tuple[str, dict[str, Any]]
    ) -> AsyncIterator[ObjectStoreBackend]:
        url, options = shared_root
        backend = ObjectStoreBackend.from_url(f"{url}/{secrets.token_hex(8)}", clock=clock, **options)
        async with backend:
            yield backend
        assert isinstance(backend.store, ObstoreStore)


async def test_fake_gcs_server_is_refused_not_trusted(fake_gcs: GCSServer) -> None:
    """obstore writes through GCS's XML API (``PUT /bucket/object``), which fake-gcs-server serves
    only as a signed-URL upload (ignoring preconditions) and otherwise refuses with 400: opening
    must fail loudly, never trust the store. Reads work, versions are generations."""
    bucket = fake_gcs.create_bucket()
    store = open_store(f"gs+obstore://{bucket}/root", retry=FAST, **fake_gcs.storage_options())
    with pytest.raises(StoreUnavailableError, match="invalid uploadType"):
        await probe_store(store)
    generation = await asyncio.to_thread(_upload_through_json_api, fake_gcs, bucket, "root/k", b"hello")
    assert await store.get("k") == StoredObject(b"hello", generation)
    # The XML API's listing carries no generation: listed versions are None (the interface allows it).
    assert [o async for o in store.list("")] == [ListedObject("k", None)]


def _upload_through_json_api(server: GCSServer, bucket: str, name: str, data: bytes) -> str:
    url = f"{server.url}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}"
    with urllib.request.urlopen(urllib.request.Request(url, data, method="POST"), timeout=10) as response:
        return str(json.load(response)["generation"])


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("s3+obstore://b/p", {"profile": "dev"}, "does not take \\['profile'\\]"),
        ("s3+obstore://b/p", {"client_kwargs": {"verify": False}}, "client_kwargs"),
        ("az+obstore://c/p", {"credential": object()}, "does not take"),
        ("gs+obstore://b/p", {"token": 7}, "token="),
        ("az+obstore://c/p", {"connection_string": "nonsense"}, "connection string"),
        ("s3+fast://b/p", {}, "no store for"),
    ],
)
def test_bad_options_get_typed_errors(url: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises((InvalidArgumentError, UnsupportedStoreError), match=message):
        open_store(url, **options)


async def test_conditional_delete_is_reported_unsupported(moto_s3: S3Endpoint) -> None:
    store = open_store(f"s3+obstore://{moto_s3.create_bucket()}/r", **moto_s3.storage_options())
    version = await store.put("k", b"x")
    assert store.supports_conditional_delete is False
    with pytest.raises(UnsupportedStoreError):
        await store.delete_if_version("k", version)
    assert (await probe_store(store)).conditional_delete is False


async def test_list_matches_partial_segments_and_pages(moto_s3: S3Endpoint) -> None:
    """obstore lists whole path segments only; the adapter keeps the byte-prefix contract, also
    across LIST pages (1,000 keys each on S3)."""
    store = open_store(f"s3+obstore://{moto_s3.create_bucket()}/r", **moto_s3.storage_options())
    keys = [f"d/k{n:04d}" for n in range(1203)]
    for start in range(0, len(keys), 100):
        for key in keys[start : start + 100]:
            await store.put(key, b"x")
    await store.put("d2/other", b"x")
    assert [o.key async for o in store.list("d/")] == keys
    assert [o.key async for o in store.list("d/k11")] == keys[1100:1200]
    assert [o.key async for o in store.list("d", start_after="d/k1199")] == [*keys[1200:], "d2/other"]


async def test_azure_url_forms_and_connection_string_parts(azurite: AzuriteServer) -> None:
    container = azurite.create_container()
    for url in (
        f"az+obstore://{container}/u",
        f"abfs+obstore://{container}/u",
        f"abfss+obstore://{container}/u/",
    ):
        store = open_store(url, **azurite.storage_options())
        assert store.url == f"az+obstore://{container}/u"
        await store.put("k", url.encode())
    # The same account through the separate options adlfs takes.
    split = open_store(
        f"az+obstore://{container}/u",
        account_name=ACCOUNT,
        account_key=ACCOUNT_KEY,
        account_host=azurite.url,
    )
    found = await split.get("k")
    assert found is not None and found.data.startswith(b"abfs")


@pytest.mark.parametrize("server", ["moto", "azurite"])
@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 412, 500])
async def test_any_answer_gives_a_result_or_a_backend_error(
    request: pytest.FixtureRequest, server: str, status: int
) -> None:
    """Whatever status the server answers, nothing but a BackendError escapes."""
    if server == "azurite":
        azurite: AzuriteServer = request.getfixturevalue("azurite")
        base, url = azurite.url.rsplit("/", 1)[0], f"az+obstore://{azurite.create_container()}/r"
        options: dict[str, Any] = {"account_name": ACCOUNT, "account_key": ACCOUNT_KEY}
        endpoint = {"account_host": f"{{proxy}}/{ACCOUNT}"}
    else:
        moto: S3Endpoint = request.getfixturevalue("moto_s3")
        base, url, options = moto.url, f"s3+obstore://{moto.create_bucket()}/r", moto.storage_options()
        endpoint = {"endpoint_url": "{proxy}"}
    with fault_proxy(base) as proxy:
        proxied = {k: v.format(proxy=proxy.url) for k, v in endpoint.items()}
        store = open_store(url, retry=FAST, **(options | proxied))
        version = await store.put("k", b"x")
        for method in ("GET", "PUT", "POST", "DELETE"):
            proxy.inject(method, "", "reject", status=status, times=1000)
        await call_every_operation(store, version)


async def test_list_of_a_missing_bucket_is_store_unavailable(moto_s3: S3Endpoint) -> None:
    store = open_store("s3+obstore://no-such-bucket-here/r", retry=FAST, **moto_s3.storage_options())
    with pytest.raises(StoreUnavailableError, match="404"):
        [o async for o in store.list("")]


@pytest.fixture
def proxy(moto_s3: S3Endpoint) -> Iterator[FaultProxy]:
    with FaultProxy(moto_s3.url, seed=20261130) as running:
        yield running


def _through(proxy: FaultProxy, moto_s3: S3Endpoint) -> ObstoreStore:
    bucket = moto_s3.create_bucket()
    options = moto_s3.storage_options() | {"endpoint_url": proxy.url}
    store = open_store(f"s3+obstore://{bucket}/r", retry=FAST, **options)
    assert isinstance(store, ObstoreStore)
    return store


@pytest.mark.parametrize("fault", ["drop_after", "error_after"])
async def test_applied_but_unanswered_create_is_ours(
    proxy: FaultProxy, moto_s3: S3Endpoint, fault: str
) -> None:
    """The first PUT lands but its answer is lost; our retry is refused by our own write: the
    adapter reads the object back and reports the write as ours."""
    store = _through(proxy, moto_s3)
    proxy.script = [fault]
    version = await store.put_if_absent("claim", b"mine")
    assert version is not None
    found = await store.get("claim")
    assert found is not None and (found.data, found.version) == (b"mine", version)
    methods = [r.method for r in proxy.records]
    assert methods == ["PUT", "PUT", "GET", "GET"], methods


async def test_applied_but_unanswered_cas_is_ours(proxy: FaultProxy, moto_s3: S3Endpoint) -> None:
    store = _through(proxy, moto_s3)
    base = await store.put("cas", b"base")
    proxy.script = ["drop_after"]
    version = await store.put_if_version("cas", b"next", base)
    assert version is not None and version != base
    assert await store.put_if_version("cas", b"late", base) is None


@pytest.mark.parametrize("write", ["create", "cas"])
async def test_a_409_conflict_is_retried_not_taken_for_a_refusal(
    proxy: FaultProxy, moto_s3: S3Endpoint, write: str
) -> None:
    """obstore maps S3's 409 ConditionalRequestConflict to AlreadyExistsError: the object is
    absent (create) or unchanged (CAS), so the condition was not false and the write is retried."""
    store = _through(proxy, moto_s3)
    base = await store.put("k", b"base")
    proxy.script = ["409"]
    if write == "create":
        assert await store.put_if_absent("fresh", b"mine") is not None
    else:
        assert await store.put_if_version("k", b"mine", base) is not None
    assert [r.fault for r in proxy.records].count("409") == 1


async def test_s3_request_timeout_400_is_retried(proxy: FaultProxy, moto_s3: S3Endpoint) -> None:
    """S3 answers a slow upload with 400 RequestTimeout: retried, unlike other 400s."""
    store = _through(proxy, moto_s3)
    proxy.script = ["400"]
    assert await store.put_if_absent("k", b"x") is not None
    assert [r.fault for r in proxy.records] == ["400", None]


async def test_refusal_by_a_competitor_is_a_loss(proxy: FaultProxy, moto_s3: S3Endpoint) -> None:
    store = _through(proxy, moto_s3)
    assert await store.put_if_absent("claim", b"theirs") is not None
    assert await store.put_if_absent("claim", b"mine") is None
    found = await store.get("claim")
    assert found is not None and found.data == b"theirs"


async def test_persistent_failure_is_store_unavailable(proxy: FaultProxy, moto_s3: S3Endpoint) -> None:
    store = _through(proxy, moto_s3)
    proxy.script = ["503"] * FAST.attempts
    with pytest.raises(StoreUnavailableError, match="after 4 attempts") as raised:
        await store.get("k")
    assert raised.value.__cause__ is not None
    assert len(proxy.records) == FAST.attempts


async def test_missing_bucket_is_store_unavailable(moto_s3: S3Endpoint) -> None:
    store = open_store("s3+obstore://no-such-bucket-here/r", retry=FAST, **moto_s3.storage_options())
    with pytest.raises(StoreUnavailableError, match="not found"):
        await store.put_if_absent("k", b"x")


async def test_messages_carry_no_sas_signature(azurite: AzuriteServer) -> None:
    """obstore redacts the request URL of a SAS-signed request in its messages ("PUT REDACTED")."""
    store = open_store(
        f"az+obstore://{azurite.create_container()}/r",
        retry=FAST,
        account_name=ACCOUNT,
        sas_token="sv=2024-08-04&ss=b&srt=co&sp=rwdlac&se=2030-01-01&sig=NOT-A-REAL-SIGNATURE",
        account_host=azurite.url,
    )
    with pytest.raises(StoreUnavailableError) as raised:
        await store.put_if_absent("k", b"x")
    assert "NOT-A-REAL-SIGNATURE" not in str(raised.value)
    assert "NOT-A-REAL-SIGNATURE" not in str(raised.value.__cause__)
