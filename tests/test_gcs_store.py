"""The GCS adapter against fake-gcs-server (a real process), plus fault injection through a proxy.

Which check runs where:

- every interface operation, the store conformance suite, concurrent create-if-absent and CAS
  races (in-process and across processes): fake-gcs-server, which enforces ``ifGenerationMatch``
  on the multipart uploads the adapter sends;
- conditional DELETE: fake-gcs-server ignores ``ifGenerationMatch`` there, so the probe marks the
  store as without conditional delete (as the backend will on this emulator), and the adapter's
  request and its reading of 412/404 are checked against fake-gcs-server behind a proxy that
  enforces the precondition the way GCS documents it (a local double for that one rule);
- retries, lost responses and dropped connections: fake-gcs-server behind a fault-injecting proxy.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from objstore_wfp import ManualClock, ObjectStoreBackend
from objstore_wfp.errors import (
    InvalidArgumentError,
    StoreUnavailableError,
    UnsupportedStoreError,
)
from objstore_wfp.stores import gcs as gcs_module
from objstore_wfp.stores._retry import RetryPolicy
from objstore_wfp.stores.gcs import GCSStore
from objstore_wfp.stores.probe import probe_store
from objstore_wfp.testing import BackendConformance
from objstore_wfp.testing.stores import StoreConformance
from tests.servers.faults import FaultProxy, call_every_operation, fault_proxy
from tests.servers.gcs import GCSBucket, GCSServer

#: Quick retries: the faults below are injected a known number of times.
FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, request_timeout=10)


def _open(bucket: GCSBucket, prefix: str = "root", endpoint: str | None = None) -> GCSStore:
    options = dict(bucket.storage_options)
    if endpoint is not None:
        options["endpoint_url"] = endpoint
    return GCSStore(f"{bucket.name}/{prefix}", retry=FAST, **options)


class TestGCSStore(StoreConformance):
    @pytest.fixture
    def store_url(self, gcs_bucket: GCSBucket) -> tuple[str, dict[str, Any]]:
        return f"gs://{gcs_bucket.name}/mp-{secrets.token_hex(4)}", gcs_bucket.storage_options

    @pytest.fixture
    async def store(self, gcs_bucket: GCSBucket) -> AsyncIterator[GCSStore]:
        store = _open(gcs_bucket)
        report = await probe_store(store)
        assert (report.create_if_absent, report.compare_and_swap) == (True, True)
        yield store
        await store.close()


@pytest.fixture
async def store(gcs_bucket: GCSBucket) -> AsyncIterator[GCSStore]:
    store = _open(gcs_bucket)
    yield store
    await store.close()


@pytest.fixture
def proxy(fake_gcs: GCSServer) -> Iterator[FaultProxy]:
    with fault_proxy(fake_gcs.url) as proxy:
        yield proxy


@pytest.fixture
async def proxied(gcs_bucket: GCSBucket, proxy: FaultProxy) -> AsyncIterator[GCSStore]:
    store = _open(gcs_bucket, endpoint=proxy.url)
    yield store
    await store.close()


def _upload_calls(proxy: FaultProxy) -> int:
    return sum(1 for seen in proxy.seen if seen.method == "POST" and "uploadType=multipart" in seen.path_qs)


# -- the emulator and its limits ----------------------------------------------------------------


async def test_probe_accepts_fake_gcs_without_conditional_delete(store: GCSStore) -> None:
    report = await probe_store(store)
    assert report.create_if_absent and report.compare_and_swap
    assert not report.conditional_delete, (
        "fake-gcs-server now enforces ifGenerationMatch on DELETE: update docs/gcs-azure.md and "
        "tests/servers/gcs.py, and drop the proxy double below"
    )
    assert store.supports_conditional_delete is False
    with pytest.raises(UnsupportedStoreError):
        await store.delete_if_version("k", "1")
    assert [o async for o in store.list("")] == [], "the probe leaves nothing behind"


async def test_conditional_delete_enforced_by_the_server(store: GCSStore) -> None:
    pytest.skip(
        "fake-gcs-server ignores ifGenerationMatch on DELETE (it deletes whatever the generation); "
        "real GCS enforces it. The adapter's side is checked by "
        "test_conditional_delete_against_an_enforcing_double."
    )


async def test_conditional_delete_against_an_enforcing_double(
    gcs_bucket: GCSBucket, proxy: FaultProxy
) -> None:
    """The proxy answers a DELETE carrying ifGenerationMatch as GCS does: 404 when the object is
    missing, 412 when its generation differs; otherwise it forwards the delete."""

    def gate(method: str, path_qs: str) -> int | None:
        parsed = urllib.parse.urlsplit(path_qs)
        expected = urllib.parse.parse_qs(parsed.query).get("ifGenerationMatch")
        if method != "DELETE" or not expected:
            return None
        try:
            with urllib.request.urlopen(f"{proxy.upstream}{parsed.path}", timeout=10) as response:
                generation = json.loads(response.read())["generation"]
        except urllib.error.HTTPError as exc:
            return exc.code
        return None if generation == expected[0] else 412

    proxy.gate = gate
    store = _open(gcs_bucket, endpoint=proxy.url)
    try:
        v1 = await store.put("cd", b"one")
        v2 = await store.put("cd", b"two")
        assert await store.delete_if_version("cd", v1) is False
        assert await store.get("cd") is not None
        assert await store.delete_if_version("cd", v2) is True
        assert await store.get("cd") is None
        assert await store.delete_if_version("cd", v2) is False
        deletes = [s.path_qs for s in proxy.seen if s.method == "DELETE"]
        assert len(deletes) == 3 and all("ifGenerationMatch=" in d for d in deletes)
        assert (await probe_store(store)).conditional_delete is True
    finally:
        await store.close()


async def test_media_upload_would_not_be_enforced(fake_gcs: GCSServer, gcs_bucket: GCSBucket) -> None:
    """Why the adapter always uses multipart uploads: fake-gcs-server silently overwrites on a
    ``uploadType=media`` upload with ``ifGenerationMatch=0``."""
    store = _open(gcs_bucket, prefix="")
    try:
        assert await store.put_if_absent("m", b"first") is not None
        url = f"{fake_gcs.url}/upload/storage/v1/b/{gcs_bucket.name}/o"
        query = "?uploadType=media&name=m&ifGenerationMatch=0"
        request = urllib.request.Request(url + query, data=b"second", method="POST")

        def send() -> int:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)

        status = await asyncio.to_thread(send)
        assert status == 200, "fake-gcs-server now enforces media uploads too"
        found = await store.get("m")
        assert found is not None and found.data == b"second"
    finally:
        await store.close()


# -- the interface ----------------------------------------------------------------------------


async def test_versions_are_generations_and_listing_carries_them(store: GCSStore) -> None:
    v1 = await store.put("a/x", b"1")
    v2 = await store.put("a/x", b"1")
    assert v1.isdigit() and v2.isdigit() and v1 != v2, "identical bytes still get a new generation"
    assert [(o.key, o.version) async for o in store.list("a/")] == [("a/x", v2)]


async def test_prefixes_isolate_stores(gcs_bucket: GCSBucket) -> None:
    one, two, whole = _open(gcs_bucket, "one"), _open(gcs_bucket, "one-two"), _open(gcs_bucket, "")
    try:
        await one.put("k", b"1")
        await two.put("k", b"2")
        assert [o.key async for o in one.list("")] == ["k"]
        assert [o.key async for o in whole.list("")] == ["one-two/k", "one/k"]
        found = await one.get("k")
        assert found is not None and found.data == b"1"
        assert one.url == f"gs://{gcs_bucket.name}/one" and whole.url == f"gs://{gcs_bucket.name}"
    finally:
        for store in (one, two, whole):
            await store.close()


async def test_list_is_lazy_page_by_page(
    gcs_bucket: GCSBucket, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gcs_module, "_PAGE_SIZE", 2)
    store = _open(gcs_bucket, endpoint=proxy.url)
    try:
        for i in range(7):
            await store.put(f"p/{i}", b"x")
        proxy.clear()
        assert [o.key async for o in store.list("p/", start_after="p/1")] == [f"p/{i}" for i in range(2, 7)]
        assert sum(1 for s in proxy.seen if s.method == "GET") == 3
        proxy.clear()
        async for _ in store.list("p/"):
            break
        assert sum(1 for s in proxy.seen if s.method == "GET") == 1
    finally:
        await store.close()


async def test_bad_arguments_are_typed(store: GCSStore) -> None:
    with pytest.raises(InvalidArgumentError):
        GCSStore("", token="anon")
    for version in ("0", "abc", "", "-1"):
        with pytest.raises(InvalidArgumentError):
            await store.put_if_version("k", b"x", version)


async def test_missing_bucket_is_store_unavailable(fake_gcs: GCSServer) -> None:
    store = GCSStore("no-such-bucket-here/p", retry=FAST, **fake_gcs.storage_options())
    try:
        with pytest.raises(StoreUnavailableError, match="not found"):
            await store.put("k", b"x")
    finally:
        await store.close()


async def test_unreachable_server_is_store_unavailable_with_cause() -> None:
    from tests.servers import free_port

    store = GCSStore("b/p", retry=FAST, endpoint_url=f"http://127.0.0.1:{free_port()}", token="anon")
    try:
        with pytest.raises(StoreUnavailableError) as caught:
            await store.get("k")
        assert caught.value.__cause__ is not None
    finally:
        await store.close()


# -- races ------------------------------------------------------------------------------------


async def test_many_concurrent_creates_and_swaps_have_one_winner_each(store: GCSStore) -> None:
    for round_ in range(5):
        key = f"race/{round_}"
        results = await asyncio.gather(*(store.put_if_absent(key, f"w{i}".encode()) for i in range(24)))
        assert sum(v is not None for v in results) == 1
        base = next(v for v in results if v is not None)
        swaps = await asyncio.gather(*(store.put_if_version(key, f"c{i}".encode(), base) for i in range(24)))
        assert sum(v is not None for v in swaps) == 1


# -- faults -----------------------------------------------------------------------------------


async def test_transient_errors_are_retried(proxied: GCSStore, proxy: FaultProxy) -> None:
    version = await proxied.put("k", b"v")
    proxy.inject("GET", "/o/root%2Fk", "reject", status=503, times=2)
    found = await proxied.get("k")
    assert found is not None and found.version == version
    proxy.inject("POST", "uploadType=multipart", "reject", status=429, times=2)
    assert await proxied.put_if_absent("fresh", b"x") is not None


async def test_persistent_failure_raises_store_unavailable(proxied: GCSStore, proxy: FaultProxy) -> None:
    proxy.inject("GET", "/o/root%2Fk", "reject", status=503, times=100)
    with pytest.raises(StoreUnavailableError) as caught:
        await proxied.get("k")
    assert isinstance(caught.value.__cause__, StoreUnavailableError)
    assert "503" in str(caught.value.__cause__)
    assert sum(1 for s in proxy.seen if s.fault) == FAST.attempts


async def test_access_denied_is_not_retried(proxied: GCSStore, proxy: FaultProxy) -> None:
    proxy.inject("POST", "uploadType=multipart", "reject", status=403)
    with pytest.raises(StoreUnavailableError, match="access denied"):
        await proxied.put("k", b"x")
    assert _upload_calls(proxy) == 1


@pytest.mark.parametrize("mode", ["lose_response", "drop"])
async def test_create_whose_answer_was_lost_is_recognised_as_ours(
    proxied: GCSStore, proxy: FaultProxy, mode: str
) -> None:
    proxy.inject("POST", "ifGenerationMatch=0", mode)  # type: ignore[arg-type]
    version = await proxied.put_if_absent("claim", b"mine, nonce 1")
    assert version is not None, "the retry met our own write: that is a success, not a loss"
    found = await proxied.get("claim")
    assert found is not None and (found.data, found.version) == (b"mine, nonce 1", version)
    assert _upload_calls(proxy) == 2


async def test_cas_whose_answer_was_lost_is_recognised_as_ours(proxied: GCSStore, proxy: FaultProxy) -> None:
    base = await proxied.put("cas", b"base")
    proxy.inject("POST", f"ifGenerationMatch={base}", "lose_response", status=500)
    version = await proxied.put_if_version("cas", b"mine, nonce 2", base)
    found = await proxied.get("cas")
    assert (
        version is not None
        and found is not None
        and (found.data, found.version) == (b"mine, nonce 2", version)
    )


async def test_ambiguous_retry_does_not_claim_someone_elses_object(
    proxied: GCSStore, proxy: FaultProxy
) -> None:
    await proxied.put("taken", b"theirs")
    # A 503 that was not applied, then the retry's 412: the object holds other bytes, so we lost.
    proxy.inject("POST", "ifGenerationMatch=0", "reject", status=503)
    assert await proxied.put_if_absent("taken", b"mine") is None
    found = await proxied.get("taken")
    assert found is not None and found.data == b"theirs"


@pytest.mark.parametrize("mode", ["lose_response", "drop"])
async def test_delete_whose_answer_was_lost_reports_deleted(
    proxied: GCSStore, proxy: FaultProxy, mode: str
) -> None:
    version = await proxied.put("d", b"x")
    proxy.inject("DELETE", "/o/root%2Fd", mode)  # type: ignore[arg-type]
    assert await proxied.delete_if_version("d", version) is True
    assert await proxied.get("d") is None


# -- the backend on fake-gcs-server -------------------------------------------------------------


@pytest.fixture(scope="session")
def gcs_shared_bucket(fake_gcs: GCSServer) -> str:
    """One bucket for the whole session; backend tests separate themselves by prefix."""
    return fake_gcs.create_bucket("conf")


class TestObjectStoreOnGCS(BackendConformance):
    """The backend conformance suite on fake-gcs-server. Its DELETE ignores preconditions, so the
    backend's probe switches to the fallback (a plain delete)."""

    @pytest.fixture
    async def backend(
        self, clock: ManualClock, fake_gcs: GCSServer, gcs_shared_bucket: str
    ) -> AsyncIterator[ObjectStoreBackend]:
        url = f"gs://{gcs_shared_bucket}/{secrets.token_hex(8)}"
        backend = ObjectStoreBackend.from_url(url, clock=clock, **fake_gcs.storage_options())
        async with backend:
            yield backend
        if not backend._verify:  # the probe ran (on first use)
            assert backend.store.supports_conditional_delete is False


@pytest.mark.parametrize("status", [400, 401, 404, 409, 410, 412, 500])
async def test_any_answer_gives_a_result_or_a_backend_error(
    proxied: GCSStore, proxy: FaultProxy, status: int
) -> None:
    """Whatever status the server answers, nothing but a BackendError escapes."""
    version = await proxied.put("k", b"x")
    for method in ("GET", "POST", "DELETE"):
        proxy.inject(method, "", "reject", status=status, times=1000)
    await call_every_operation(proxied, version)


async def test_url_forms_open_the_same_store(gcs_bucket: GCSBucket) -> None:
    from objstore_wfp.stores.urls import open_store

    for url in (f"gs://{gcs_bucket.name}/u/v", f"gcs://{gcs_bucket.name}/u/v/"):
        store = open_store(url, **gcs_bucket.storage_options)
        try:
            assert isinstance(store, GCSStore) and store.url == f"gs://{gcs_bucket.name}/u/v"
            await store.put("k", url.encode())
        finally:
            await store.close()
