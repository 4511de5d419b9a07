"""The S3 adapter against two independent S3 implementations (moto_server and LocalStack, both
real processes), plus fault injection through a proxy in front of moto_server."""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest

from objstore_wfp import AtFork, ObjectStoreBackend, WorkflowSnapshot
from objstore_wfp.errors import (
    BackendError,
    InvalidArgumentError,
    StoreUnavailableError,
    UnsupportedStoreError,
)
from objstore_wfp.stores import probe
from objstore_wfp.stores.probe import check_botocore_conditions, probe_store
from objstore_wfp.stores.s3 import S3Store
from objstore_wfp.testing.stores import StoreConformance
from tests.servers.faultproxy import FaultProxy
from tests.servers.s3 import FaultyS3, S3Bucket, S3Endpoint


async def _opened(bucket: S3Bucket, prefix: str = "root", **options: object) -> S3Store:
    """A store on ``bucket/prefix``, probed as ``ObjectStoreBackend`` does when it opens one."""
    store = S3Store(f"{bucket.name}/{prefix}", **bucket.storage_options, **options)
    await probe_store(store)
    return store


@pytest.fixture
async def s3_store(s3_bucket: S3Bucket) -> AsyncIterator[S3Store]:
    store = await _opened(s3_bucket)
    yield store
    await store.close()


class TestS3StoreConformance(StoreConformance):
    """The store conformance suite, once per S3 server."""

    @pytest.fixture
    async def store(self, s3_store: S3Store) -> S3Store:
        return s3_store

    @pytest.fixture
    def store_url(self, s3_bucket: S3Bucket) -> tuple[str, dict[str, Any]]:
        return s3_bucket.url(f"mp-{secrets.token_hex(4)}"), s3_bucket.storage_options


@pytest.fixture
def moto_bucket(moto_s3: S3Endpoint) -> S3Bucket:
    return S3Bucket(moto_s3, moto_s3.create_bucket(), moto_s3.storage_options())


@pytest.fixture
def proxy(moto_s3: S3Endpoint) -> Iterator[FaultProxy]:
    """A fault proxy in front of moto_server, injecting nothing until told to."""
    with FaultProxy(moto_s3.url, seed=20261125) as running:
        yield running


def _through(proxy: FaultProxy, bucket: S3Bucket, **options: float) -> S3Store:
    """A store on ``bucket/root`` whose requests go through ``proxy``."""
    return S3Store(f"{bucket.name}/root", **{**bucket.storage_options, "endpoint_url": proxy.url, **options})


@pytest.fixture
async def proxied_store(moto_bucket: S3Bucket, proxy: FaultProxy) -> AsyncIterator[S3Store]:
    """A store on moto_server through the proxy."""
    store = _through(proxy, moto_bucket, retry_budget=20, attempt_timeout=5.0)
    yield store
    await store.close()


# --- what the probe sees on each server ---------------------------------------------------------


async def test_probe_reports_conditional_delete_per_server(s3_bucket: S3Bucket) -> None:
    store = S3Store(f"{s3_bucket.name}/p", **s3_bucket.storage_options)
    try:
        report = await probe_store(store)
        assert report.create_if_absent and report.compare_and_swap
        assert report.conditional_delete is s3_bucket.endpoint.conditional_delete
        assert store.supports_conditional_delete is s3_bucket.endpoint.conditional_delete
        assert [o async for o in store.list("")] == [], "the probe cleans up after itself"
        if not report.conditional_delete:
            # LocalStack answers 501: the backend's plain-delete fallback is what runs there.
            assert "501" in report.note
            version = await store.put("k", b"x")
            with pytest.raises(UnsupportedStoreError):
                await store.delete_if_version("k", version)
            assert await store.get("k") is not None
    finally:
        await store.close()


async def test_first_501_on_conditional_delete_turns_the_fallback_on(localstack_s3: S3Endpoint) -> None:
    if localstack_s3.conditional_delete:
        pytest.skip("this LocalStack supports conditional delete")
    bucket = localstack_s3.create_bucket()
    store = S3Store(bucket, **localstack_s3.storage_options())
    try:
        assert store.supports_conditional_delete  # not probed yet
        version = await store.put("k", b"x")
        with pytest.raises(UnsupportedStoreError, match="501"):
            await store.delete_if_version("k", version)
        assert store.supports_conditional_delete is False
        found = await store.get("k")
        assert found is not None and found.version == version
    finally:
        await store.close()


async def test_probe_refuses_a_server_that_ignores_preconditions(moto_bucket: S3Bucket) -> None:
    """A real HTTP path that drops If-None-Match / If-Match on the way, as s3rver does."""
    with FaultProxy(moto_bucket.endpoint.url, strip_conditions=("PUT",)) as stripping:
        options = {**moto_bucket.storage_options, "endpoint_url": stripping.url}
        store = S3Store(moto_bucket.name, **options)
        try:
            with pytest.raises(UnsupportedStoreError, match="create-if-absent"):
                await probe_store(store)
            assert [o.key async for o in store.list("")] == [], "the probe cleans up after itself"
        finally:
            await store.close()


async def test_probe_detects_a_server_that_ignores_conditional_delete(moto_bucket: S3Bucket) -> None:
    with FaultProxy(moto_bucket.endpoint.url, strip_conditions=("DELETE",)) as stripping:
        options = {**moto_bucket.storage_options, "endpoint_url": stripping.url}
        store = S3Store(moto_bucket.name, **options)
        try:
            report = await probe_store(store)
            assert (report.create_if_absent, report.compare_and_swap) == (True, True)
            assert report.conditional_delete is False
            assert "stale version deleted" in report.note
            assert store.supports_conditional_delete is False
            assert [o.key async for o in store.list("")] == []
        finally:
            await store.close()


def test_botocore_model_knows_the_condition_parameters() -> None:
    check_botocore_conditions()


def test_botocore_without_a_condition_parameter_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import botocore

    monkeypatch.setitem(probe._S3_CONDITION_PARAMETERS, "PutObject", ("IfNoneMatch", "IfMatchFuture"))
    with pytest.raises(UnsupportedStoreError, match=rf"botocore {botocore.__version__}.*IfMatchFuture"):
        check_botocore_conditions()
    with pytest.raises(UnsupportedStoreError):
        S3Store("bucket/prefix", endpoint_url="http://127.0.0.1:9")


# --- adapter behaviour on both servers ----------------------------------------------------------


async def test_keys_live_under_the_prefix(s3_bucket: S3Bucket) -> None:
    a = S3Store(f"s3://{s3_bucket.name}/tenant/a", **s3_bucket.storage_options)
    b = S3Store(f"{s3_bucket.name}/tenant/ab", **s3_bucket.storage_options)
    try:
        await a.put("x/1", b"a")
        await b.put("x/1", b"b")
        assert [o.key async for o in a.list("")] == ["x/1"]
        assert [o.key async for o in b.list("x/")] == ["x/1"]
        raw = s3_bucket.endpoint.client().list_objects_v2(Bucket=s3_bucket.name)
        assert sorted(o["Key"] for o in raw["Contents"]) == ["tenant/a/x/1", "tenant/ab/x/1"]
        assert a.url == f"s3://{s3_bucket.name}/tenant/a at {s3_bucket.endpoint.url}"
    finally:
        await a.close()
        await b.close()


async def test_no_stale_versions_across_clients(s3_bucket: S3Bucket, s3_store: S3Store) -> None:
    """Another client's write is seen at once by list, get and the conditions (no listing cache)."""
    version = await s3_store.put("obj", b"one")
    assert [(o.key, o.version) async for o in s3_store.list("")] == [("obj", version)]
    s3_bucket.endpoint.client().put_object(Bucket=s3_bucket.name, Key="root/obj", Body=b"two")
    listed = [o.version async for o in s3_store.list("")]
    found = await s3_store.get("obj")
    assert found is not None and found.data == b"two"
    assert listed == [found.version] and found.version != version
    assert await s3_store.put_if_version("obj", b"three", version) is None
    assert await s3_store.put_if_absent("obj", b"three") is None
    s3_bucket.endpoint.client().delete_object(Bucket=s3_bucket.name, Key="root/obj")
    assert [o async for o in s3_store.list("")] == []
    assert await s3_store.put_if_absent("obj", b"four") is not None


async def test_many_concurrent_cas_on_a_chain_lose_no_update(s3_store: S3Store) -> None:
    """Workers increment a counter by read + CAS: every success is one increment, none lost."""
    await s3_store.put("counter", b"0")
    successes = 0

    async def worker(name: str) -> None:
        nonlocal successes
        for _ in range(5):
            while True:
                found = await s3_store.get("counter")
                assert found is not None
                value = int(found.data.split(b" ")[0]) + 1
                if await s3_store.put_if_version("counter", b"%d %s" % (value, name.encode()), found.version):
                    successes += 1
                    break

    await asyncio.gather(*(worker(f"w{i}") for i in range(6)))
    found = await s3_store.get("counter")
    assert found is not None and int(found.data.split(b" ")[0]) == successes == 30


async def test_errors_are_typed(s3_bucket: S3Bucket) -> None:
    missing = S3Store(f"no-such-bucket-{secrets.token_hex(4)}/p", **s3_bucket.storage_options)
    try:
        with pytest.raises(StoreUnavailableError, match="no-such-bucket") as raised:
            await missing.put_if_absent("k", b"x")
        assert raised.value.__cause__ is not None
        # A missing bucket is not a missing object: no call may answer "absent" for it.
        for call in (missing.get("k"), missing.put_if_version("k", b"x", '"v"'), missing.delete("k")):
            with pytest.raises(StoreUnavailableError, match="NoSuchBucket"):
                await call
    finally:
        await missing.close()
    store = S3Store(s3_bucket.name, **s3_bucket.storage_options)
    try:
        for bad in ["", "/abs", "a//b", "sp ace", "ü"]:
            with pytest.raises(InvalidArgumentError):
                await store.put(bad, b"x")
    finally:
        await store.close()
    with pytest.raises(InvalidArgumentError):
        S3Store("s3://", **s3_bucket.storage_options)


def test_url_never_shows_credentials() -> None:
    store = S3Store("b/p", endpoint_url="https://user:secret@s3.example.test:9000/", key="k", secret="s")
    assert store.url == "s3://b/p at https://s3.example.test:9000"


async def test_unreachable_endpoint_gives_up_within_the_budget() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        store = S3Store(
            "bucket/p",
            endpoint_url=f"http://127.0.0.1:{port}",
            key="k",
            secret="s",
            retry_budget=0.5,
            attempt_timeout=1,
        )
        try:
            with pytest.raises(StoreUnavailableError, match="attempts") as raised:
                await store.get("k")
            assert raised.value.__cause__ is not None
        finally:
            await store.close()


def test_store_survives_a_new_event_loop_per_call(moto_bucket: S3Bucket) -> None:
    """Synchronous callers run one ``asyncio.run`` per call; the client follows the loop."""
    store = S3Store(moto_bucket.name, **moto_bucket.storage_options)
    version = asyncio.run(store.put("k", b"one"))
    found = asyncio.run(store.get("k"))
    assert found is not None and found.version == version
    asyncio.run(store.close())


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"])
async def test_endpoint_from_the_environment(
    moto_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    endpoint = moto_bucket.endpoint
    monkeypatch.setenv(variable, endpoint.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", endpoint.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", endpoint.secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    store = S3Store(f"{moto_bucket.name}/env")
    assert store.url == f"s3://{moto_bucket.name}/env at {endpoint.url}"
    try:
        assert await store.put_if_absent("k", b"via env") is not None
        body = endpoint.client().get_object(Bucket=moto_bucket.name, Key="env/k")["Body"].read()
        assert body == b"via env"
    finally:
        await store.close()


# --- requests on the wire -----------------------------------------------------------------------


async def test_one_request_per_call_and_conditions_on_the_wire(
    proxied_store: S3Store, proxy: FaultProxy
) -> None:
    store = proxied_store
    big = secrets.token_bytes(12 * 1024 * 1024)  # above s3fs's multipart threshold

    async def requests(call: object) -> list[tuple[str, str, tuple[str, ...]]]:
        before = len(proxy.records)
        await call  # type: ignore[misc]
        return [(r.method, r.query, r.conditions) for r in proxy.records[before:]]

    assert await requests(store.put_if_absent("k", big)) == [("PUT", "", ("If-None-Match: *",))]
    found = await store.get("k")
    assert found is not None and found.data == big
    # A refused conditional PUT is checked with one GET (was it our own write, answer lost?).
    assert await requests(store.put_if_absent("k", b"x")) == [
        ("PUT", "", ("If-None-Match: *",)),
        ("GET", "", ()),
    ]
    version = found.version
    swap = await requests(store.put_if_version("k", big[::-1], version))
    assert swap == [("PUT", "", (f"If-Match: {version}",))]
    assert len(await requests(store.get("k"))) == 1
    assert len(await requests(store.put("k", b"small"))) == 1
    current = await store.get("k")
    assert current is not None
    deleting = await requests(store.delete_if_version("k", current.version))
    assert deleting == [("DELETE", "", (f"If-Match: {current.version}",))]
    assert len(await requests(store.delete("k"))) == 1
    assert not any("uploads" in r.query for r in proxy.records), "no multipart upload"


async def test_list_pages_lazily(proxied_store: S3Store, proxy: FaultProxy, moto_bucket: S3Bucket) -> None:
    store = proxied_store
    direct = S3Store(f"{moto_bucket.name}/root", **moto_bucket.storage_options)
    writers = asyncio.Semaphore(16)

    async def put(i: int) -> None:
        async with writers:
            await direct.put(f"many/{i:05d}", b"")

    await asyncio.gather(*(put(i) for i in range(1001)))
    await direct.close()
    before = len(proxy.records)
    async for _ in store.list("many/"):
        break
    assert len(proxy.records) - before == 1
    keys = [o.key async for o in store.list("many/")]
    assert keys == [f"many/{i:05d}" for i in range(1001)]
    assert len(proxy.records) - before == 3, "1,001 keys are two pages"
    tail = [o.key async for o in store.list("many/", start_after="many/00998")]
    assert tail == ["many/00999", "many/01000"]


# --- ambiguous failures: the write happened, the answer was lost --------------------------------


@pytest.mark.parametrize("fault", ["drop_after", "error_after", "slow"])
async def test_lost_answer_to_own_create_is_recognised(
    moto_bucket: S3Bucket, proxy: FaultProxy, fault: str
) -> None:
    store = _through(proxy, moto_bucket, retry_budget=20, attempt_timeout=1.0)
    proxy.slow_seconds = 2.0  # above the store's attempt timeout: the client gives up waiting
    proxy.script = [fault]
    try:
        version = await store.put_if_absent("claim", b"mine")
        assert version is not None, "the retry met our own write and must report success"
        found = await store.get("claim")
        assert found is not None and found.version == version and found.data == b"mine"
    finally:
        await store.close()
    methods = [r.method for r in proxy.records]
    assert methods[:3] == ["PUT", "PUT", "GET"], methods


async def test_lost_answer_to_own_cas_is_recognised(proxied_store: S3Store, proxy: FaultProxy) -> None:
    base = await proxied_store.put("cas", b"base")
    proxy.script = ["drop_after"]
    version = await proxied_store.put_if_version("cas", b"next", base)
    assert version is not None
    found = await proxied_store.get("cas")
    assert found is not None and (found.data, found.version) == (b"next", version)


async def test_lost_answer_to_someone_elses_object_is_a_loss(
    proxied_store: S3Store, proxy: FaultProxy, moto_bucket: S3Bucket
) -> None:
    moto_bucket.endpoint.client().put_object(Bucket=moto_bucket.name, Key="root/taken", Body=b"theirs")
    proxy.script = ["drop_before"]
    assert await proxied_store.put_if_absent("taken", b"mine") is None


async def test_lost_answer_to_conditional_delete_reports_false(
    proxied_store: S3Store, proxy: FaultProxy
) -> None:
    """No bytes to compare after a delete: the adapter never claims a success it cannot prove."""
    version = await proxied_store.put("gone", b"x")
    proxy.script = ["drop_after"]
    assert await proxied_store.delete_if_version("gone", version) is False
    assert await proxied_store.get("gone") is None


async def test_retries_end_in_store_unavailable_with_cause(moto_bucket: S3Bucket, proxy: FaultProxy) -> None:
    proxy.rate, proxy.faults = 1.0, ("503",)
    options = {**moto_bucket.storage_options, "endpoint_url": proxy.url}
    store = S3Store(moto_bucket.name, retry_budget=0.5, attempt_timeout=1, **options)
    try:
        with pytest.raises(StoreUnavailableError, match="attempts") as raised:
            await store.get("k")
        assert "SlowDown" in repr(raised.value.__cause__)
    finally:
        await store.close()


# --- 20% faults: every claim still exclusive, nothing lost, only typed errors -------------------


async def test_races_under_twenty_percent_faults(moto_bucket: S3Bucket, proxy: FaultProxy) -> None:
    # Slow answers outlast the attempt timeout, so timeouts after an applied write happen too.
    store = _through(proxy, moto_bucket, retry_budget=10, attempt_timeout=1.0)
    proxy.slow_seconds = 1.2
    proxy.rate = 0.2
    try:
        await _race_under_faults(store, proxy)
    finally:
        await store.close()


async def _race_under_faults(store: S3Store, proxy: FaultProxy) -> None:
    outcomes: Counter[str] = Counter()

    def tally(result: object) -> None:
        if isinstance(result, BaseException):
            assert isinstance(result, StoreUnavailableError), f"untyped error {result!r}"
            outcomes["unavailable"] += 1
        else:
            outcomes["won" if result else "lost"] += 1

    # Claims: racers create the same key; at most one wins, and the stored bytes name the winner
    # (or, only if every attempt of the writer failed, a racer that got StoreUnavailableError).
    for round_ in range(15):
        key = f"claim/{round_}"
        payloads = [f"{key} by racer {i} {secrets.token_hex(4)}".encode() for i in range(6)]
        results = await asyncio.gather(
            *(store.put_if_absent(key, p) for p in payloads), return_exceptions=True
        )
        for result in results:
            tally(result)
        winners = [p for p, r in zip(payloads, results, strict=True) if isinstance(r, str)]
        unsure = [p for p, r in zip(payloads, results, strict=True) if isinstance(r, BaseException)]
        assert len(winners) <= 1, f"{len(winners)} winners for {key}"
        proxy.rate = 0.0
        found = await store.get(key)
        proxy.rate = 0.2
        assert found is not None
        assert found.data in (winners or unsure), "the stored claim belongs to no winner"

    # A chain: each worker appends a unique entry to the list it read, by CAS. Every reported
    # success must survive in the final list (two CAS on one version would drop one of them). A
    # CAS reported lost may still be in it: its write landed, the answer was lost and another
    # worker built on it before the check (the adapter then reports a loss, the safe side).
    await store.put("chain", b"")
    succeeded: list[bytes] = []
    reported_lost: list[bytes] = []
    unsure: list[bytes] = []

    async def worker(name: str) -> None:
        for n in range(4):
            while True:
                entry = f"{name}.{n}.{secrets.token_hex(4)}".encode()
                try:
                    found = await store.get("chain")
                    assert found is not None
                    body = found.data + entry + b"\n"
                    result = await store.put_if_version("chain", body, found.version)
                except StoreUnavailableError as exc:
                    tally(exc)
                    unsure.append(entry)
                    break
                tally(result)
                if result is not None:
                    succeeded.append(entry)
                    break
                reported_lost.append(entry)

    await asyncio.gather(*(worker(f"w{i}") for i in range(5)))
    proxy.rate = 0.0
    found = await store.get("chain")
    assert found is not None
    history = found.data.split(b"\n")[:-1]
    assert len(history) == len(set(history))
    missing = set(succeeded) - set(history)
    assert not missing, f"{len(missing)} reported CAS successes were lost"
    phantoms = set(history) - set(succeeded)
    assert phantoms <= set(reported_lost) | set(unsure), "an entry nobody tried to write"
    outcomes["lost but applied"] = len(phantoms)

    injected = proxy.injected()
    # Writes applied but answered by a cut or a 500 are the faults that matter most here.
    assert {"drop_after", "error_after"} <= set(injected) and len(injected) >= 5, injected
    print(f"\nfaults injected: {dict(injected)}; outcomes: {dict(outcomes)}")


async def test_backend_workers_under_twenty_percent_faults(faulty_s3: FaultyS3) -> None:
    """Workers (each its own backend and connections) race for every task of a fork and record
    outputs while 20% of requests fail: one holder per task, outputs only from holders, and no
    error other than StoreUnavailableError."""
    tasks = [f"t{i}" for i in range(12)]
    url = f"s3://{faulty_s3.bucket}/wf"
    options = {**faulty_s3.endpoint.storage_options(), "retry_budget": 10, "attempt_timeout": 1.0}
    backends = [ObjectStoreBackend.from_url(url, **options) for _ in range(4)]
    snapshot = WorkflowSnapshot("order/1", "flow")
    snapshot.update_position(AtFork("f", tasks, []))
    await backends[0].save_snapshot(snapshot)
    faulty_s3.proxy.slow_seconds = 1.2
    faulty_s3.proxy.rate = 0.2
    holders: dict[str, list[str]] = {t: [] for t in tasks}
    errors: list[BaseException] = []
    unsure: set[str] = set()

    async def worker(n: int, backend: ObjectStoreBackend) -> None:
        for task in tasks if n % 2 else reversed(tasks):
            try:
                claim = await backend.claim_task("order/1", task, f"w{n}", timedelta(minutes=10))
                if claim is None:
                    continue
                holders[task].append(f"w{n}")
                await backend.save_task_result("order/1", task, f"by w{n}".encode(), claim=claim)
            except BackendError as exc:
                assert isinstance(exc, StoreUnavailableError), f"unexpected {exc!r}"
                errors.append(exc)
                unsure.add(task)

    try:
        await asyncio.gather(*(worker(n, b) for n, b in enumerate(backends)))
        faulty_s3.proxy.rate = 0.0
        for task in tasks:
            assert len(holders[task]) <= 1, f"{task} claimed by {holders[task]}"
            output = await backends[0].load_task_result("order/1", task)
            if output is not None:
                assert holders[task] and output == f"by {holders[task][0]}".encode()
            if task not in unsure:
                assert output is not None, f"{task}: claimed and saved without error, yet no output"
        held = {c.task_id: c.worker_id for c in await backends[0].list_claims("order/1")}
        for task, names in holders.items():
            if names:
                assert held.get(task) == names[0]
    finally:
        for backend in backends:
            await backend.close()
    injected = faulty_s3.proxy.injected()
    assert sum(injected.values()) >= 20, injected
    print(f"\nbackend run: faults {dict(injected)}, {len(errors)} StoreUnavailableError")
