"""ObjectStoreBackend on S3, beyond the conformance suite: how ``from_url`` finds the endpoint and
credentials, refusal of a store that ignores preconditions, a multi-process claim race on
moto_server, and the requests each operation costs (counted by ``CountingStore`` and checked
against moto's own request log).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import multiprocessing
import os
import random
import re
import secrets
import subprocess
import sys
import textwrap
import time
import traceback
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from objstore_wfp import (
    AtTask,
    ClaimLostError,
    NotFoundError,
    ObjectStoreBackend,
    UnsupportedStoreError,
    WorkflowSnapshot,
)
from objstore_wfp.backends.objectstore import INLINE_LIMIT
from objstore_wfp.stores.counting import CountingStore
from objstore_wfp.stores.s3 import S3Store
from tests.servers import REPO_ROOT, free_port
from tests.servers.faultproxy import FaultProxy
from tests.servers.s3 import REGION, S3Endpoint

# --- moto's request log -----------------------------------------------------------------------


class MotoRecorder:
    """moto_server's request recorder (``/moto-api/recorder/``): every request it received, with
    headers. The recorder is server-wide, so only use it while nothing else talks to the server."""

    def __init__(self, endpoint: S3Endpoint) -> None:
        self._api = f"{endpoint.url}/moto-api/recorder"

    def _call(self, action: str, method: str = "POST") -> str:
        request = urllib.request.Request(
            f"{self._api}/{action}", method=method, data=b"" if method == "POST" else None
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(response.read().decode())

    def start(self) -> None:
        """Forget what was recorded and record from now on."""
        self._call("reset-recording")
        self._call("start-recording")

    def stop(self) -> None:
        self._call("stop-recording")

    def entries(self) -> list[dict[str, Any]]:
        """The requests recorded since :meth:`start`."""
        text = self._call("download-recording", "GET")
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def _kind(entry: dict[str, Any]) -> str:
    """The ``CountingStore`` name of a recorded S3 request."""
    headers = {k.lower() for k in entry["headers"]}
    method, query = entry["method"], urlsplit(entry["url"]).query
    if method == "GET":
        return "list" if "list-type=2" in query else "get"
    if method == "PUT":
        if "if-none-match" in headers:
            return "put_if_absent"
        return "put_if_version" if "if-match" in headers else "put"
    if method == "DELETE":
        return "delete_if_version" if "if-match" in headers else "delete"
    return f"{method} {query}"


@pytest.fixture
def recorder(moto_s3: S3Endpoint) -> Iterator[MotoRecorder]:
    recording = MotoRecorder(moto_s3)
    recording.start()
    yield recording
    recording.stop()


@pytest.fixture(scope="session")
def moto_shared_bucket(moto_s3: S3Endpoint) -> str:
    return moto_s3.create_bucket("backend")


def _prefix_url(bucket: str) -> str:
    return f"s3://{bucket}/{secrets.token_hex(8)}"


# --- endpoint and credentials -------------------------------------------------------------------

_ENV_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from objstore_wfp import ObjectStoreBackend, StoreUnavailableError, WorkflowSnapshot

    url, moto, dead = sys.argv[1:4]
    outcomes = {}

    async def attempt(case, env_endpoint, **options):
        os.environ["AWS_ENDPOINT_URL"] = env_endpoint
        try:
            async with ObjectStoreBackend.from_url(f"{url}/{case}", **options) as backend:
                await backend.save_snapshot(WorkflowSnapshot(case, "flow"))
                outcomes[case] = await backend.list_snapshots()
        except StoreUnavailableError as exc:
            outcomes[case] = type(exc).__name__

    async def main():
        await attempt("env", moto)
        await attempt("option-wins", dead, endpoint_url=moto)
        await attempt("env-dead", dead, retry_budget=0.3, attempt_timeout=2)

    asyncio.run(main())
    print(json.dumps(outcomes))
    """
)


def test_aws_endpoint_url_selects_the_endpoint(moto_s3: S3Endpoint, moto_shared_bucket: str) -> None:
    """``AWS_ENDPOINT_URL`` points ``from_url("s3://...")`` at moto; an explicit ``endpoint_url``
    storage option wins over it; a dead endpoint from the environment fails typed. Run in a child
    process so the environment of this one stays untouched."""
    prefix = secrets.token_hex(8)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": REGION}
    dead = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [sys.executable, "-c", _ENV_SCRIPT, f"s3://{moto_shared_bucket}/{prefix}", moto_s3.url, dead],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    outcomes = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcomes == {"env": ["env"], "option-wins": ["option-wins"], "env-dead": "StoreUnavailableError"}
    listed = moto_s3.client().list_objects_v2(Bucket=moto_shared_bucket, Prefix=f"{prefix}/")
    keys = [o["Key"] for o in listed.get("Contents", [])]
    assert any(k.startswith(f"{prefix}/env/") for k in keys), keys
    assert any(k.startswith(f"{prefix}/option-wins/") for k in keys), keys
    assert not any(k.startswith(f"{prefix}/env-dead/") for k in keys), keys


def _signed_with(entry: dict[str, Any], key: str, secret: str) -> bool:
    """Whether a recorded request's SigV4 signature was made with ``key`` / ``secret``."""
    authorization = entry["headers"]["Authorization"]
    if f"Credential={key}/" not in authorization:
        return False
    signed = re.search(r"SignedHeaders=([^,\s]+)", authorization)
    given = re.search(r"Signature=([0-9a-f]+)", authorization)
    assert signed and given, authorization
    names = set(signed.group(1).split(";"))
    headers = {k: v for k, v in entry["headers"].items() if k.lower() in names}
    request = AWSRequest(method=entry["method"], url=entry["url"], headers=headers)
    request.context["timestamp"] = entry["headers"]["X-Amz-Date"]
    auth = S3SigV4Auth(Credentials(key, secret), "s3", REGION)
    expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
    return bool(expected == given.group(1))


async def test_storage_options_reach_the_wire(
    moto_s3: S3Endpoint, moto_shared_bucket: str, recorder: MotoRecorder
) -> None:
    """``endpoint_url``, ``key`` and ``secret`` given to ``from_url`` are what every request uses:
    the requests reach this moto and are signed with exactly that key pair."""
    key, secret = f"AKIA{secrets.token_hex(6).upper()}", secrets.token_urlsafe(24)
    options = {
        "endpoint_url": moto_s3.url,
        "key": key,
        "secret": secret,
        "client_kwargs": {"region_name": REGION},
    }
    async with ObjectStoreBackend.from_url(_prefix_url(moto_shared_bucket), **options) as backend:
        snap = WorkflowSnapshot("creds", "flow")
        snap.update_position(AtTask("a"))
        await backend.save_snapshot(snap)
        assert await backend.claim_task("creds", "a", "w", None) is not None
    entries = recorder.entries()
    assert len(entries) > 10  # the probe and the operations
    assert all(_signed_with(e, key, secret) for e in entries)
    assert not any(_signed_with(e, key, secret + "x") for e in entries)


# --- stores that ignore preconditions --------------------------------------------------------------


@pytest.fixture
def ignoring_proxy(moto_s3: S3Endpoint) -> Iterator[FaultProxy]:
    """moto_server behind a proxy that strips If-Match / If-None-Match: a store that silently
    overwrites, like s3rver."""
    with FaultProxy(moto_s3.url, strip_conditions=("PUT", "DELETE")) as proxy:
        yield proxy


async def test_store_ignoring_preconditions_is_refused_on_first_use(
    moto_s3: S3Endpoint, moto_shared_bucket: str, ignoring_proxy: FaultProxy
) -> None:
    prefix = secrets.token_hex(8)
    options = {**moto_s3.storage_options(), "endpoint_url": ignoring_proxy.url}
    url = f"s3://{moto_shared_bucket}/{prefix}"
    async with ObjectStoreBackend.from_url(url, **options) as backend:
        snap = WorkflowSnapshot("never", "flow")
        with pytest.raises(UnsupportedStoreError, match="create-if-absent"):
            await backend.save_snapshot(snap)
        with pytest.raises(UnsupportedStoreError):
            await backend.claim_task("never", "a", "w", None)
    listed = moto_s3.client().list_objects_v2(Bucket=moto_shared_bucket, Prefix=f"{prefix}/")
    assert listed.get("KeyCount", 0) == 0, "refused before writing anything (probe cleaned up)"
    assert all("_probe/" in r.path for r in ignoring_proxy.records)

    # The documented opt-out: no probe, and the store is used as it is.
    ignoring_proxy.records.clear()
    async with ObjectStoreBackend.from_url(url, verify_conditional_writes=False, **options) as backend:
        snap.update_position(AtTask("a"))
        await backend.save_snapshot(snap)
        assert (await backend.load_snapshot("never")).position == AtTask("a")
        assert await backend.claim_task("never", "a", "w", None) is not None
    assert ignoring_proxy.records and not any("_probe/" in r.path for r in ignoring_proxy.records)


async def test_the_probe_runs_once(moto_s3: S3Endpoint, moto_shared_bucket: str) -> None:
    prefix = secrets.token_hex(8)
    store = CountingStore(S3Store(f"{moto_shared_bucket}/{prefix}", **moto_s3.storage_options()))
    async with ObjectStoreBackend(store) as backend:
        assert await backend.list_snapshots() == []
        # The probe's two creates and two compare-and-swaps, then the layout marker's create.
        assert store.counts["put_if_absent"] == 2 + 1 and store.counts["put_if_version"] == 2
        store.reset()
        assert await backend.list_snapshots() == []
        await backend.save_snapshot(WorkflowSnapshot("once", "flow"))
        assert store.counts == Counter({"list": 1, "get": 1, "put_if_absent": 1})


# --- multi-process claim race -----------------------------------------------------------------------

RACERS = 8
ROUNDS = 16
#: The free-running phase ends after this many holdings in all, or after FREE_SECONDS.
FREE_HOLDINGS = 40
FREE_SECONDS = 20.0


def _race_main(config: dict[str, Any], barrier: Any, held: Any, out: str) -> None:
    """One racing process: rounds in lockstep, then free-running claims (see the test)."""
    try:
        asyncio.run(_race(config, barrier, held, out))
    except BaseException:
        barrier.abort()  # the others stop waiting for this one
        Path(out).write_text(json.dumps({"error": traceback.format_exc()}))
        raise


async def _race(config: dict[str, Any], barrier: Any, held: Any, out: str) -> None:
    me, instance = config["worker"], config["instance"]
    log: dict[str, list[Any]] = {"rounds": [], "holdings": []}
    async with ObjectStoreBackend.from_url(config["url"], **config["options"]) as backend:
        await backend.verify_store()
        for r in range(ROUNDS):
            # Every fourth round the previous winner's claim expires instead of being released.
            expiring = r % 4 == 3
            barrier.wait(timeout=120)
            claim = await backend.claim_task(instance, "hot", me, timedelta(seconds=1 if expiring else 60))
            if claim is not None:
                assert claim.expires_at is not None
                log["rounds"].append(
                    [r, claim.token, claim.claimed_at.timestamp(), claim.expires_at.timestamp()]
                )
            barrier.wait(timeout=120)  # everyone has tried: only then may the task come free
            if expiring:
                await asyncio.sleep(1.1)
            elif claim is not None:
                await backend.release_task_claim(instance, "hot", me)
        barrier.wait(timeout=120)
        deadline = time.time() + FREE_SECONDS
        rng = random.Random(me)
        while held.value < FREE_HOLDINGS and time.time() < deadline:
            claim = await backend.claim_task(instance, "free", me, timedelta(seconds=0.3))
            if claim is None:
                await asyncio.sleep(rng.uniform(0, 0.02))
                continue
            start = time.time()
            assert claim.expires_at is not None
            # Mostly release early; sometimes overrun the TTL so that others take over.
            await asyncio.sleep(rng.choice([0.0, 0.02, 0.05, 0.4]))
            end = min(time.time(), claim.expires_at.timestamp())
            # After an overrun: taken over (ClaimLostError), or taken over and released already.
            with contextlib.suppress(ClaimLostError, NotFoundError):
                await backend.release_task_claim(instance, "free", me)
            log["holdings"].append([start, end, claim.token, me])
            with held.get_lock():
                held.value += 1
    with open(out, "w") as file:  # noqa: ASYNC230 - once, at the end of the process
        json.dump(log, file)


@pytest.mark.slow
def test_claim_race_across_processes(moto_s3: S3Endpoint, moto_shared_bucket: str, tmp_path: Path) -> None:
    """8 processes claim one task in lockstep rounds (released or left to expire between rounds):
    exactly one winner per round, fencing tokens 1, 2, 3, ... Then they claim freely for a few
    seconds with a short TTL: no two holdings overlap and tokens grow with time."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(RACERS)
    held = context.Value("i", 0)
    url = _prefix_url(moto_shared_bucket)
    outs = [str(tmp_path / f"racer-{n}.json") for n in range(RACERS)]
    processes = [
        context.Process(
            target=_race_main,
            args=(
                {"worker": f"w{n}", "instance": "race", "url": url, "options": moto_s3.storage_options()},
                barrier,
                held,
                out,
            ),
        )
        for n, out in enumerate(outs)
    ]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join(timeout=180)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(timeout=10)
    logs = [json.loads(Path(out).read_text()) if Path(out).exists() else {"error": "no log"} for out in outs]
    errors = [log["error"] for log in logs if "error" in log]
    assert not errors, "\n".join(errors)

    wins = sorted(
        (token, r, claimed, expires) for log in logs for r, token, claimed, expires in log["rounds"]
    )
    assert [w[0] for w in wins] == list(range(1, len(wins) + 1)), f"tokens are not 1, 2, 3, ...: {wins}"
    assert sorted({w[1] for w in wins}) == list(range(ROUNDS)), f"a round without a winner: {wins}"
    for before, after in itertools.pairwise(wins):
        if before[1] == after[1]:
            # Only a takeover of an expired claim may give a round a second winner (when the
            # machine is so loaded that some racer tried only after the 1 s TTL).
            assert before[1] % 4 == 3 and after[2] >= before[3], (
                f"two winners in one round: {before}, {after}"
            )

    holdings = sorted(h for log in logs for h in log["holdings"])
    assert len(holdings) >= 10, f"only {len(holdings)} holdings in {FREE_SECONDS} s"
    assert len({h[3] for h in holdings}) > 1, "more than one process should win sometimes"
    for before, after in itertools.pairwise(holdings):
        assert before[1] <= after[0], f"overlapping holdings: {before} and {after}"
        assert before[2] < after[2], f"fencing token did not grow: {before} then {after}"


# --- requests per operation ---------------------------------------------------------------------


@pytest.fixture
async def counted(
    moto_s3: S3Endpoint, moto_shared_bucket: str
) -> AsyncIterator[tuple[ObjectStoreBackend, CountingStore]]:
    store = CountingStore(
        S3Store(f"{moto_shared_bucket}/{secrets.token_hex(8)}", **moto_s3.storage_options())
    )
    async with ObjectStoreBackend(store) as backend:
        yield backend, store


#: Filled by the test below: operation -> (store calls by kind, wire requests by kind).
REQUESTS_PER_OPERATION: dict[str, tuple[Counter[str], Counter[str]]] = {}


async def test_requests_per_operation(
    counted: tuple[ObjectStoreBackend, CountingStore], recorder: MotoRecorder
) -> None:
    """Every operation's cost, as store calls (``CountingStore``) and as requests moto received,
    pinned to the measured budget of layout 2. The two differ by the GET with
    which ``S3Store`` checks every refused conditional PUT (was it our own earlier attempt?)."""
    backend, store = counted

    async def measure(name: str, operation: Any) -> Any:
        store.reset()
        recorder.start()
        result = await operation
        calls, wire = Counter(store.counts), Counter(_kind(e) for e in recorder.entries())
        conditional_puts = calls["put_if_absent"] + calls["put_if_version"]
        assert wire - Counter(get=wire["get"]) == calls - Counter(get=calls["get"]), (name, calls, wire)
        assert calls["get"] <= wire["get"] <= calls["get"] + conditional_puts, (name, calls, wire)
        REQUESTS_PER_OPERATION[name] = (calls, wire)
        return result

    ttl = timedelta(minutes=5)
    await measure("probe (first use)", backend.verify_store())
    await measure("list_snapshots (first use: the layout marker)", backend.list_snapshots())
    snap = WorkflowSnapshot("order/1", "flow", initial_input=b"in")
    snap.update_position(AtTask("a"))
    await measure("save_snapshot (new, 1 ready task)", backend.save_snapshot(snap))
    loaded = await measure("load_snapshot", backend.load_snapshot("order/1"))
    loaded.updated_at = loaded.updated_at + timedelta(seconds=1)
    await measure("save_snapshot (CAS, ready set unchanged)", backend.save_snapshot(loaded))
    claim = await measure("claim_task (first claim)", backend.claim_task("order/1", "a", "w1", ttl))
    assert claim is not None
    assert (
        await measure("claim_task (held by another)", backend.claim_task("order/1", "a", "w2", ttl)) is None
    )
    await measure("extend_task_claim", backend.extend_task_claim("order/1", "a", "w1", ttl))
    await measure("save_task_result (fenced)", backend.save_task_result("order/1", "a", b"out", claim=claim))
    await measure("load_task_result", backend.load_task_result("order/1", "a"))
    await measure("release_task_claim", backend.release_task_claim("order/1", "a", "w1"))
    again = await measure("claim_task (after release)", backend.claim_task("order/1", "a", "w2", ttl))
    assert again is not None and again.token == 2
    await measure(
        "save_task_result (unfenced, 300 KiB output)",
        backend.save_task_result("order/1", "b", b"x" * (INLINE_LIMIT + 50_000)),
    )

    for n in range(20):
        idle = WorkflowSnapshot(f"idle/{n}", "flow")
        await backend.save_snapshot(idle)
    for n in range(5):
        ready = WorkflowSnapshot(f"ready/{n}", "flow")
        ready.update_position(AtTask("t"))
        await backend.save_snapshot(ready)
    found = await measure(
        "find_available_tasks (26 instances, 5 ready, limit 3)", backend.find_available_tasks("w3", 3)
    )
    assert len(found) == 3
    await measure("list_snapshots (26 instances)", backend.list_snapshots())
    await measure("request_cancellation", backend.request_cancellation("ready/0", "stop", "ops"))
    assert await measure("check_and_cancel", backend.check_and_cancel("ready/0"))
    await measure("delete_snapshot (1 claim, 1 blob)", backend.delete_snapshot("order/1"))

    print("\noperation | store calls | S3 requests (moto's log)")
    for name, (calls, wire) in REQUESTS_PER_OPERATION.items():
        detail = ", ".join(f"{kind} {n}" for kind, n in sorted(wire.items()))
        print(f"{name} | {sum(calls.values())} ({dict(calls)}) | {sum(wire.values())} ({detail})")
    # The budget of layout 2, measured: a backend remembers the snapshot copy it last read or
    # wrote and the claims it granted, so a compare-and-swap or a renewal starts without a read.
    per_op = {name: sum(calls.values()) for name, (calls, _) in REQUESTS_PER_OPERATION.items()}
    del per_op["probe (first use)"]  # its requests are the probe's business (test_probe.py)
    assert per_op == {
        "list_snapshots (first use: the layout marker)": 4,  # GET marker, LIST, create it; LIST
        "save_snapshot (new, 1 ready task)": 3,  # GET, PUT entry, create
        "load_snapshot": 1,
        "save_snapshot (CAS, ready set unchanged)": 1,  # the CAS, from the copy just loaded
        # A direct claim_task reads the snapshot (a cached copy may be of a deleted incarnation);
        # claim_available claims from the copy its poll read.
        "claim_task (first claim)": 5,  # GET snapshot, claim; PUT leased entry, DELETE fresh; create
        "claim_task (held by another)": 2,  # GET snapshot, claim: held (no refused PUT to pay for)
        "extend_task_claim": 2,  # GET snapshot (is the incarnation current?), the CAS
        "save_task_result (fenced)": 2,  # the fenced CAS, DELETE the entry
        "load_task_result": 1,
        "release_task_claim": 4,  # GET snapshot, claim, snapshot again (fresh), the CAS
        "claim_task (after release)": 4,  # GET snapshot, claim, CAS; publish the token: CAS
        "save_task_result (unfenced, 300 KiB output)": 2,  # the blob, the CAS
        "find_available_tasks (26 instances, 5 ready, limit 3)": 4,  # LIST, a GET per task
        "list_snapshots (26 instances)": 1,
        "request_cancellation": 1,
        "check_and_cancel": 3,  # GET, CAS, DELETE the entry
        "delete_snapshot (1 claim, 1 blob)": 7,
    }


async def test_unprobed_store_without_conditional_delete_still_deletes(localstack_s3: S3Endpoint) -> None:
    """With the probe skipped, the backend learns of LocalStack's missing conditional delete from
    the first 501; ``delete_snapshot`` must still delete (the contract's errors do not include
    UnsupportedStoreError for it)."""
    bucket = localstack_s3.create_bucket("unprobed")
    url = f"s3://{bucket}/{secrets.token_hex(8)}"
    options = localstack_s3.storage_options()
    async with ObjectStoreBackend.from_url(url, verify_conditional_writes=False, **options) as backend:
        await backend.save_snapshot(WorkflowSnapshot("gone", "flow"))
        await backend.delete_snapshot("gone")
        assert await backend.list_snapshots() == []
