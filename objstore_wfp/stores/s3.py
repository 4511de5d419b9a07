"""The S3 adapter: :class:`~objstore_wfp.stores.base.ConditionalStore` over s3fs/aiobotocore.

s3fs is used for what it is good at (storage options, credentials, endpoints, sessions); every
request is a raw aiobotocore call made here, so the conditions reach the wire and the real S3
error codes are seen:

- ``put_if_absent``: one PutObject with ``If-None-Match: *``; ``put_if_version``: one PutObject
  with ``If-Match: <etag>``. Never multipart (the backend's objects are small, and s3fs drops
  ``If-Match`` on its multipart path). ``delete_if_version``: DeleteObject with ``If-Match``.
- "Condition false" is read from the botocore error, portably: HTTP 412 / ``PreconditionFailed``,
  and 404 ``NoSuchKey`` for ``If-Match`` on a missing key (the object vanished).
- Versions are ETags. A single-part ETag is the MD5 of the bytes, so identical bytes give the same
  version; the backend writes a fresh nonce into every object, which removes that ABA hazard.
- No listing cache anywhere: every decision reads the store.

Retries. botocore's own retries are switched off (``total_max_attempts=1``) so that the time
budget is this module's and a conditional write is never re-sent without it knowing. This module
retries instead, with full-jitter exponential backoff, on 409
``ConditionalRequestConflict``/``OperationAborted``, 429, 500, 502, 503 ``SlowDown``, 504,
throttling codes, timeouts and connection errors. Every attempt is bounded by
``attempt_timeout`` and no attempt starts after ``retry_budget`` seconds, so a call takes at most
about ``retry_budget + attempt_timeout``; then it raises
:class:`~objstore_wfp.errors.StoreUnavailableError` with the last error as ``__cause__``.

Ambiguous conditional writes. A request that failed without a definite answer (connection
dropped, timeout, 5xx) may still have been applied, and a retry of a PUT-if-absent whose first
attempt landed answers 412 *for our own write*. Retries also happen below this module: aiohttp
silently re-sends a PUT or DELETE once when the connection drops. So whenever a conditional PUT is
refused, the adapter reads the object and compares bytes: the backend's nonce makes every payload
unique, so equal bytes prove the write was ours and its version is returned; anything else is a
loss. (The flip side: a conditional PUT of bytes identical to the stored object reports success.
On S3 the two are indistinguishable anyway, ETag included; callers must not rely on a refusal
for a byte-identical rewrite.) The adapter never reports a success it cannot prove: if our
write landed and was already replaced or deleted by someone else before the check, the call
reports a loss (safe: the object is no longer ours anyway; the caller re-reads and decides, as
after any refusal). For ``delete_if_version`` there are no bytes to compare: when the object is
found gone or changed the answer is ``False``, even if an earlier attempt of this very call
deleted it.

Stores without conditional delete (LocalStack answers 501 NotImplemented) are detected by the
probe (:func:`objstore_wfp.stores.probe.probe_store`) or by the first such 501: the instance's
``supports_conditional_delete`` becomes ``False`` and ``delete_if_version`` raises
:class:`~objstore_wfp.errors.UnsupportedStoreError`; the backend then deletes unconditionally
(no guarantee rests on conditional delete).

Requests per call (no faults): ``get``, ``put``, ``delete``, ``delete_if_version`` and a
successful ``put_if_absent`` / ``put_if_version``: 1 each; a refused conditional PUT: 2 (the PUT
and the GET that checks it); ``list``: 1 per 1,000 keys.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiobotocore.session
import aiohttp
import botocore.exceptions
import botocore.loaders
import botocore.parsers
import s3fs

from objstore_wfp.backoff import Backoff
from objstore_wfp.errors import InvalidArgumentError, StoreUnavailableError, UnsupportedStoreError
from objstore_wfp.stores._perloop import PerLoop
from objstore_wfp.stores._retry import S3_RETRYABLE_CODES
from objstore_wfp.stores.base import ConditionalStore, ListedObject, StoredObject, server_age
from objstore_wfp.stores.probe import check_botocore_conditions

T = TypeVar("T")

_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    botocore.exceptions.HTTPClientError,
    botocore.exceptions.ConnectionError,
    botocore.exceptions.IncompleteReadError,
    aiohttp.ClientError,
    asyncio.TimeoutError,
    ConnectionError,
    # A truncated or garbled response body (a proxy cut it short).
    botocore.parsers.ResponseParserError,
)

#: Between retries of one request: the retry budget bounds the total, so the cap stays short.
_BACKOFF = Backoff(base=0.1, cap=2.0)
_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~/-")


def _error_code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: botocore.exceptions.ClientError) -> int:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return int(status or 0)


def _precondition_failed(exc: BaseException) -> bool:
    return isinstance(exc, botocore.exceptions.ClientError) and (
        _status(exc) == 412 or _error_code(exc) == "PreconditionFailed"
    )


def _not_found(exc: BaseException) -> bool:
    """The object does not exist (a missing bucket is a configuration error, not this)."""
    return (
        isinstance(exc, botocore.exceptions.ClientError)
        and _error_code(exc) != "NoSuchBucket"
        and (_error_code(exc) in ("NoSuchKey", "NotFound") or _status(exc) == 404)
    )


def _not_implemented(exc: BaseException) -> bool:
    return isinstance(exc, botocore.exceptions.ClientError) and (
        _status(exc) == 501 or _error_code(exc) == "NotImplemented"
    )


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, botocore.exceptions.ClientError):
        if _error_code(exc) == "NoSuchBucket":
            return False
        return _status(exc) in _RETRYABLE_STATUS or _error_code(exc) in S3_RETRYABLE_CODES
    return isinstance(exc, _TRANSPORT_ERRORS)


def _endpoint_for_messages(storage_options: dict[str, Any]) -> str | None:
    """The endpoint the client will use, as botocore resolves it, without any credentials."""
    endpoint = (
        storage_options.get("endpoint_url")
        or (storage_options.get("client_kwargs") or {}).get("endpoint_url")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    if not endpoint:
        return None
    parts = urlsplit(str(endpoint))
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")).rstrip("/")


def _check_key(key: str) -> None:
    if not key or key.startswith("/") or "//" in key or not _KEY_CHARS.issuperset(key):
        raise InvalidArgumentError(f"invalid store key {key!r}")


class S3Store(ConditionalStore):
    """A conditional store rooted at ``bucket/prefix`` on S3 or an S3-compatible service.

    ``path`` is ``bucket``, ``bucket/prefix`` or ``s3://bucket/prefix``. ``storage_options`` go to
    :class:`s3fs.S3FileSystem` unchanged (``endpoint_url``, ``key``, ``secret``, ``token``,
    ``profile``, ``anon``, ``client_kwargs``, ``config_kwargs``, ...); credentials follow the boto
    chain and ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` apply as botocore defines them. The
    adapter controls a few things itself: botocore-level retries are always disabled (see the
    module docstring), and ``asynchronous``, ``loop``, ``skip_instance_cache`` and
    ``use_listings_cache`` are ignored (no listing cache is ever used).

    ``retry_budget`` (seconds) bounds how long a call keeps retrying; ``attempt_timeout``
    (seconds) bounds each request.

    One store serves any number of event loops and threads: each loop gets its own s3fs
    filesystem and aiobotocore client on first use, closed when that loop closes or on
    :meth:`close` (see :mod:`objstore_wfp.stores._perloop`).

    Raises :class:`~objstore_wfp.errors.UnsupportedStoreError` if the installed botocore does not
    know the conditional-request parameters.
    """

    def __init__(
        self,
        path: str,
        *,
        retry_budget: float = 30.0,
        attempt_timeout: float = 15.0,
        **storage_options: Any,
    ) -> None:
        check_botocore_conditions()
        bucket, _, prefix = path.removeprefix("s3://").strip("/").partition("/")
        if not bucket:
            raise InvalidArgumentError(f"S3 path {path!r} names no bucket")
        if retry_budget < 0 or attempt_timeout <= 0:
            raise InvalidArgumentError("retry_budget must be >= 0 and attempt_timeout > 0")
        self._bucket = bucket
        self._prefix = prefix.strip("/")
        self._root = f"{self._prefix}/" if self._prefix else ""
        self._retry_budget = retry_budget
        self._attempt_timeout = attempt_timeout
        self._endpoint = _endpoint_for_messages(storage_options)
        options = dict(storage_options)
        config_kwargs = dict(options.pop("config_kwargs", None) or {})
        config_kwargs["retries"] = {"total_max_attempts": 1}
        # The adapter's own way of using s3fs, whatever the caller's fsspec habits.
        for controlled in ("asynchronous", "loop", "skip_instance_cache", "use_listings_cache"):
            options.pop(controlled, None)
        self._options = {**options, "config_kwargs": config_kwargs}
        self._filesystem()  # s3fs checks the options when constructed: fail here, not on first use
        self._clients: PerLoop[tuple[s3fs.S3FileSystem, Any]] = PerLoop(
            self._connect, _disconnect, f"the S3 client of {self.url}"
        )

    def _filesystem(self) -> s3fs.S3FileSystem:
        return s3fs.S3FileSystem(
            asynchronous=True, skip_instance_cache=True, use_listings_cache=False, **self._options
        )

    async def _connect(self) -> tuple[s3fs.S3FileSystem, Any]:
        # One filesystem per event loop: s3fs's session lock, the aiobotocore client and its
        # aiohttp session all belong to the loop that made them.
        fs = self._filesystem()
        # The session s3fs would make, but reading botocore's model files through one loader
        # per process: otherwise every new loop re-parses them (about 0.1 s of CPU).
        fs.session = aiobotocore.session.AioSession(**fs.kwargs)
        fs.session.register_component("data_loader", _shared_loader())
        return fs, await fs.set_session()

    @property
    def url(self) -> str:
        where = f"s3://{self._bucket}/{self._prefix}".rstrip("/")
        return f"{where} at {self._endpoint}" if self._endpoint else where

    @property
    def bucket(self) -> str:
        """The bucket the store lives in."""
        return self._bucket

    def _key(self, key: str) -> str:
        _check_key(key)
        return self._root + key

    async def _client(self) -> Any:
        """The running event loop's aiobotocore S3 client."""
        return (await self._clients.get())[1]

    async def _retrying(self, what: str, key: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt()`` until it returns, retrying transient failures within the budget."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        tries = 0
        while True:
            try:
                return await asyncio.wait_for(attempt(), self._attempt_timeout)
            except (StoreUnavailableError, UnsupportedStoreError, InvalidArgumentError):
                raise
            except Exception as exc:
                tries += 1
                where = f"{what} {self.url}/{key}"
                if not _retryable(exc):
                    raise StoreUnavailableError(f"{where} failed: {exc!r}") from exc
                delay = _BACKOFF.delay(tries)
                elapsed = loop.time() - started
                if elapsed + delay > self._retry_budget:
                    raise StoreUnavailableError(
                        f"{where} still failing after {tries} attempts in {elapsed:.1f}s: {exc!r}"
                    ) from exc
                await asyncio.sleep(delay)

    async def _read(self, key: str) -> StoredObject | None:
        """One GetObject attempt, body included (a broken body read is retried as a whole)."""
        client = await self._client()
        try:
            response = await client.get_object(Bucket=self._bucket, Key=self._root + key)
        except botocore.exceptions.ClientError as exc:
            if _not_found(exc):
                return None
            raise
        async with response["Body"] as body:
            data = await body.read()
        answered = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        age = server_age(response.get("LastModified"), answered)
        return StoredObject(bytes(data), str(response["ETag"]), age)

    async def _version_if_ours(self, key: str, data: bytes) -> str | None:
        """After a refused conditional PUT: the version of ``key`` if it holds exactly ``data``
        (our own write, applied by an attempt whose answer was lost)."""
        found = await self._read(key)
        return found.version if found is not None and found.data == data else None

    async def get(self, key: str) -> StoredObject | None:
        _check_key(key)

        async def attempt() -> StoredObject | None:
            return await self._read(key)

        return await self._retrying("get", key, attempt)

    async def put(self, key: str, data: bytes) -> str:
        full = self._key(key)

        async def attempt() -> str:
            client = await self._client()
            response = await client.put_object(Bucket=self._bucket, Key=full, Body=data)
            return str(response["ETag"])

        return await self._retrying("put", key, attempt)

    async def _put_conditionally(self, what: str, key: str, data: bytes, **condition: str) -> str | None:
        full = self._key(key)

        async def attempt() -> str | None:
            client = await self._client()
            try:
                response = await client.put_object(Bucket=self._bucket, Key=full, Body=data, **condition)
            except botocore.exceptions.ClientError as exc:
                if not (_precondition_failed(exc) or ("IfMatch" in condition and _not_found(exc))):
                    raise
                return await self._version_if_ours(key, data)
            return str(response["ETag"])

        return await self._retrying(what, key, attempt)

    async def put_if_absent(self, key: str, data: bytes) -> str | None:
        return await self._put_conditionally("put_if_absent", key, data, IfNoneMatch="*")

    async def put_if_version(self, key: str, data: bytes, version: str) -> str | None:
        return await self._put_conditionally("put_if_version", key, data, IfMatch=version)

    async def delete(self, key: str) -> None:
        full = self._key(key)

        async def attempt() -> None:
            client = await self._client()
            try:
                await client.delete_object(Bucket=self._bucket, Key=full)
            except botocore.exceptions.ClientError as exc:
                if not _not_found(exc):
                    raise

        await self._retrying("delete", key, attempt)

    async def delete_if_version(self, key: str, version: str) -> bool:
        full = self._key(key)
        if not self.supports_conditional_delete:
            raise UnsupportedStoreError(f"{self.url} does not support conditional delete")

        async def attempt() -> bool:
            client = await self._client()
            try:
                await client.delete_object(Bucket=self._bucket, Key=full, IfMatch=version)
            except botocore.exceptions.ClientError as exc:
                if _precondition_failed(exc) or _not_found(exc):
                    return False
                if _not_implemented(exc):
                    self.supports_conditional_delete = False
                    raise UnsupportedStoreError(
                        f"{self.url} does not support conditional delete (DeleteObject If-Match "
                        f"answered {_status(exc)} {_error_code(exc)})"
                    ) from exc
                raise
            return True

        return await self._retrying("delete_if_version", key, attempt)

    async def list(self, prefix: str, *, start_after: str | None = None) -> AsyncIterator[ListedObject]:
        params: dict[str, str] = {"Bucket": self._bucket, "Prefix": self._root + prefix}
        if start_after is not None:
            params["StartAfter"] = self._root + start_after
        while True:

            async def attempt(params: dict[str, str] = params) -> dict[str, Any]:
                client = await self._client()
                page: dict[str, Any] = await client.list_objects_v2(**params)
                return page

            page = await self._retrying("list", prefix, attempt)
            for item in page.get("Contents", ()):
                yield ListedObject(str(item["Key"])[len(self._root) :], item.get("ETag"))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            params = {**params, "ContinuationToken": token}

    async def close(self) -> None:
        """Close the clients of every event loop (see :mod:`objstore_wfp.stores._perloop`)."""
        await self._clients.aclose()


@functools.cache
def _shared_loader() -> botocore.loaders.Loader:
    return botocore.loaders.create_loader()


async def _disconnect(connection: tuple[s3fs.S3FileSystem, Any]) -> None:
    fs, _ = connection
    await fs._s3creator.__aexit__(None, None, None)
