"""``s3+obstore://``, ``gs+obstore://``, ``az+obstore://``: S3, GCS and Azure Blob Storage through
`obstore <https://developmentseed.org/obstore/>`_ (Python bindings over the Rust ``object_store``
crate), an optional extra (``pip install 'objstore-wfp[obstore]'``) that spends several times less
client CPU per request than the aiobotocore, gcsfs and azure-sdk adapters (``docs/obstore.md``).

Conditions are obstore's put modes, which put them on the wire itself:

- create-if-absent: ``mode="create"`` (``If-None-Match: *`` on S3 and Azure,
  ``x-goog-if-generation-match: 0`` on GCS);
- compare-and-swap: ``mode={"e_tag": etag}`` on S3 and Azure, ``mode={"version": generation}`` on
  GCS (the version is the generation there, the ETag elsewhere);
- no conditional delete: ``supports_conditional_delete`` is ``False`` and the backend deletes
  unconditionally (no guarantee rests on it).

Retries. obstore's own retries are switched off (``max_retries=0``): a conditional PUT it re-sends
out of sight meets its own earlier write and reports it as a competitor's, and its retry budget
would stack on ours. Retries are the shared policy of :mod:`objstore_wfp.stores._retry`
(``retry=RetryPolicy(...)``: attempts, full-jitter backoff, a per-request timeout), so a call takes
at most about ``attempts * request_timeout + (attempts - 1) * max_delay`` seconds, then raises
:class:`~objstore_wfp.errors.StoreUnavailableError`. Retried: HTTP 408, 409, 429 and 5xx, S3's
retryable error codes whatever their status (``RequestTimeout`` comes as 400), timeouts and
connection failures. obstore reports HTTP statuses and bodies only inside its messages; they are
read from there, and an error without a status is a transport failure (retried).

Refused conditional writes. Every refusal is checked by one GET, as the other cloud adapters do
after an ambiguous attempt, and decided on what the store holds, not on the refusal's status code
(obstore turns any S3 409, including a transient ``ConditionalRequestConflict``, into
``AlreadyExistsError``):

- the object holds exactly our bytes: an earlier attempt of ours landed; its version is returned
  (the backend writes a unique nonce into every object, so equal bytes prove the write was ours);
- create-if-absent refused but no object exists, or compare-and-swap refused while the object is
  still at the expected version: the refusal was a conflict, not "condition false": retried;
- anything else: the condition is false, ``None``.

Requests per call (no faults): ``get``, ``put``, ``delete`` and a successful conditional put: 1;
a refused conditional put: 2; ``list``: 1 per page (1,000 keys on S3 and GCS, 5,000 on Azure).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    BaseError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)
from obstore.store import AzureStore, GCSStore, S3Store

from objstore_wfp.errors import InvalidArgumentError, StoreUnavailableError, UnsupportedStoreError
from objstore_wfp.stores._retry import S3_RETRYABLE_CODES, RetryPolicy, TransientError, with_retries
from objstore_wfp.stores.base import ConditionalStore, ListedObject, StoredObject

if TYPE_CHECKING:
    from obstore import PutMode, PutResult
    from obstore.store import ClientConfig

T = TypeVar("T")
Cloud = Literal["s3", "gcs", "azure"]

#: HTTP statuses worth another attempt: timeouts, S3's ConditionalRequestConflict, throttling, 5xx.
_TRANSIENT = frozenset({408, 409, 429, 500, 502, 503, 504})
_STATUS = re.compile(r"status code: (\d{3})")
#: The error code in an S3 error body (S3 sends RequestTimeout and some throttling as 400).
_S3_CODE = re.compile(r"<Code>(\w+)</Code>")
_SCHEMES = {"s3": "s3+obstore", "gcs": "gs+obstore", "azure": "az+obstore"}

#: The storage options each cloud accepts, named as s3fs, gcsfs and adlfs name them.
OPTIONS: dict[Cloud, frozenset[str]] = {
    "s3": frozenset({"endpoint_url", "key", "secret", "token", "anon", "client_kwargs"}),
    "gcs": frozenset({"endpoint_url", "token", "project"}),
    "azure": frozenset(
        {"connection_string", "account_name", "account_key", "sas_token", "account_host", "anon"}
    ),
}
_S3_CLIENT_KWARGS = frozenset({"endpoint_url", "region_name"})

# obstore's tokio threads drop Python references (a finished request's buffers and callbacks) a
# moment after an await returns; one that does so once the interpreter is finalizing aborts the
# process (SIGABRT, exit status 134: about one short-lived process in four on moto_server, with
# obstore 0.12.1; the pyo3-async-runtimes shutdown problem, PyO3/pyo3-async-runtimes#40). Letting
# go of the GIL for a moment at exit lets them finish first: no aborts in 80 runs.
atexit.register(time.sleep, 0.005)


class ObstoreStore(ConditionalStore):
    """Objects under ``bucket/prefix`` (``container/prefix`` on Azure) on ``cloud`` through obstore.

    ``path`` is the URL without its scheme; the prefix may be empty. ``storage_options`` use the
    fsspec names (the table in ``docs/obstore.md``); any other option raises
    :class:`~objstore_wfp.errors.InvalidArgumentError`, because silently dropping, say, an endpoint
    would send requests elsewhere. Everything not given is left to obstore's environment
    variables (``AWS_*``, ``GOOGLE_*``, ``AZURE_STORAGE_*``) and credential chains. ``retry`` bounds
    attempts and the time per request (:class:`~objstore_wfp.stores._retry.RetryPolicy`).
    """

    supports_conditional_delete = False

    def __init__(
        self, cloud: Cloud, path: str, *, retry: RetryPolicy | None = None, **storage_options: Any
    ) -> None:
        bucket, _, prefix = path.strip("/").partition("/")
        if cloud == "azure" and "@" in bucket:  # abfs://container@account.dfs.core.windows.net/prefix
            bucket, _, host = bucket.partition("@")
            storage_options.setdefault("account_name", host.split(".", 1)[0])
        if not bucket:
            raise InvalidArgumentError(f"no bucket or container in {path!r} (expected bucket/prefix)")
        unknown = set(storage_options) - OPTIONS[cloud]
        if unknown:
            raise InvalidArgumentError(
                f"{_SCHEMES[cloud]}:// does not take {sorted(unknown)}; it takes {sorted(OPTIONS[cloud])}"
            )
        self._cloud: Cloud = cloud
        self._bucket = bucket
        self._prefix = prefix.strip("/")
        self._retry = retry or RetryPolicy()
        self._version_field: Literal["e_tag", "version"] = "version" if cloud == "gcs" else "e_tag"
        config, endpoint = _CONFIGS[cloud](dict(storage_options))
        client: ClientConfig = {"timeout": timedelta(seconds=self._retry.request_timeout)}
        if endpoint is not None and endpoint.startswith("http://"):
            client["allow_http"] = True
        try:
            self._store = _STORES[cloud](
                bucket,
                prefix=self._prefix or None,
                client_options=client,
                retry_config={"max_retries": 0},
                **config,
            )
        except (ValueError, TypeError, BaseError) as exc:
            raise InvalidArgumentError(f"cannot open {self.url}: {exc}") from exc

    @property
    def url(self) -> str:
        base = f"{_SCHEMES[self._cloud]}://{self._bucket}"
        return f"{base}/{self._prefix}" if self._prefix else base

    # -- plumbing -------------------------------------------------------------------------------

    async def _call(self, what: str, make: Callable[[], Awaitable[T]]) -> T:
        """One obstore call. Not-found and refusals pass through for the caller to read; a
        transient failure becomes :class:`TransientError`, anything else
        :class:`StoreUnavailableError` (or :class:`InvalidArgumentError` for a key obstore
        cannot address)."""
        try:
            return await make()
        except (FileNotFoundError, AlreadyExistsError, PreconditionError):
            raise
        except (PermissionDeniedError, UnauthenticatedError) as exc:
            raise StoreUnavailableError(f"{what}: access denied: {_first_line(exc)}") from exc
        except ValueError as exc:
            raise InvalidArgumentError(f"{what}: {_first_line(exc)}") from exc
        except Exception as exc:
            text = str(exc)
            status = _STATUS.search(text)
            code = _S3_CODE.search(text)
            if (
                status is None
                or int(status.group(1)) in _TRANSIENT
                or (code is not None and code.group(1) in S3_RETRYABLE_CODES)
            ):
                raise TransientError(exc) from exc
            raise StoreUnavailableError(f"{what}: {_first_line(exc)}") from exc

    def _listed_version(self, found: Mapping[str, object]) -> str | None:
        version = found.get(self._version_field)
        if not version:
            return None
        # Azure lists ETags bare but reads and writes them quoted: one form for every version.
        return (
            str(version)
            if self._version_field == "version" or str(version).startswith('"')
            else f'"{version}"'
        )

    def _version(self, found: Mapping[str, object], what: str) -> str:
        version = self._listed_version(found)
        if version is None:
            raise StoreUnavailableError(f"{what}: the store answered without an {self._version_field}")
        return version

    async def _get_once(self, key: str) -> StoredObject | None:
        what = f"{self.url}: read {key!r}"

        async def read() -> StoredObject:
            result = await obstore.get_async(self._store, key)
            data = bytes(await result.bytes_async())
            return StoredObject(data, self._version(result.meta, what))

        try:
            return await self._call(what, read)
        except FileNotFoundError:
            return None
        except (AlreadyExistsError, PreconditionError) as exc:  # a 409 on a plain GET
            raise TransientError(exc) from exc

    async def _write(self, key: str, data: bytes, expected: str | None, mode: PutMode) -> str | None:
        what = f"{self.url}: write {key!r}"

        async def attempt(_: bool) -> str | None:
            async def put() -> PutResult:
                return await obstore.put_async(self._store, key, data, mode=mode, use_multipart=False)

            try:
                return self._version(await self._call(what, put), what)
            except FileNotFoundError as exc:
                raise StoreUnavailableError(f"{what}: bucket {self._bucket!r} not found") from exc
            except (AlreadyExistsError, PreconditionError) as exc:
                if mode == "overwrite":  # a 409 on an unconditional PUT
                    raise TransientError(exc) from exc
                found = await self._get_once(key)
                if found is not None and found.data == data:
                    return found.version
                # A create refused while nothing exists, or a CAS refused while the object is
                # still at the expected version: a conflict, not "condition false".
                conflict = (
                    found is None if expected is None else found is not None and found.version == expected
                )
                if conflict:
                    raise TransientError(exc) from exc
                return None

        return await with_retries(self._retry, what, attempt)

    # -- the interface ------------------------------------------------------------------------

    async def get(self, key: str) -> StoredObject | None:
        async def attempt(_: bool) -> StoredObject | None:
            return await self._get_once(key)

        return await with_retries(self._retry, f"{self.url}: read {key!r}", attempt)

    async def put(self, key: str, data: bytes) -> str:
        version = await self._write(key, data, None, "overwrite")
        assert version is not None  # an unconditional write has no condition to fail
        return version

    async def put_if_absent(self, key: str, data: bytes) -> str | None:
        return await self._write(key, data, None, "create")

    async def put_if_version(self, key: str, data: bytes, version: str) -> str | None:
        if not version:
            raise InvalidArgumentError(f"not a version: {version!r}")
        mode: PutMode = {"version": version} if self._version_field == "version" else {"e_tag": version}
        return await self._write(key, data, version, mode)

    async def delete(self, key: str) -> None:
        what = f"{self.url}: delete {key!r}"

        async def attempt(_: bool) -> None:
            try:
                await self._call(what, lambda: obstore.delete_async(self._store, key))
            except FileNotFoundError:
                pass  # Azure reports a missing blob; S3 and GCS do not
            except (AlreadyExistsError, PreconditionError) as exc:  # a 409 on a DELETE
                raise TransientError(exc) from exc

        await with_retries(self._retry, what, attempt)

    async def delete_if_version(self, key: str, version: str) -> bool:
        raise UnsupportedStoreError(f"{self.url}: obstore has no conditional delete")

    async def list(self, prefix: str, *, start_after: str | None = None) -> AsyncIterator[ListedObject]:
        # obstore matches prefixes on whole path segments: list the enclosing "directory" and keep
        # the keys that start with the prefix. Keys come in byte order, so the first key past the
        # prefix ends the listing (the backend's prefixes all end in "/": nothing is filtered).
        directory = prefix.rpartition("/")[0]
        what = f"{self.url}: list {prefix!r}"
        last = start_after
        stream: Any = None

        async def page(_: bool) -> list[Any]:
            nonlocal stream
            if stream is None:
                stream = obstore.list(self._store, directory or None, offset=last, chunk_size=1000)
            try:
                return list(await self._call(what, lambda: anext(stream, [])))
            except FileNotFoundError as exc:
                raise StoreUnavailableError(f"{what}: bucket {self._bucket!r} not found") from exc
            except (AlreadyExistsError, PreconditionError) as exc:  # a 409 on a LIST
                stream = None
                raise TransientError(exc) from exc
            except TransientError:
                stream = None  # start again after the last key seen
                raise

        while True:
            chunk = await with_retries(self._retry, what, page)
            if not chunk:
                return
            for meta in chunk:
                key = str(meta["path"])
                if start_after is not None and key <= start_after:
                    continue  # Azurite ignores the offset obstore sends
                if key.startswith(prefix):
                    yield ListedObject(key, self._listed_version(meta))
                elif key > prefix:
                    return
                last = key


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _endpoint(value: Any) -> str:
    return str(value).rstrip("/")


def _s3_config(options: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    client_kwargs = dict(options.pop("client_kwargs", None) or {})
    unknown = set(client_kwargs) - _S3_CLIENT_KWARGS
    if unknown:
        raise InvalidArgumentError(
            f"s3+obstore:// takes client_kwargs {sorted(_S3_CLIENT_KWARGS)} only, not {sorted(unknown)}"
        )
    config: dict[str, Any] = {}
    endpoint = options.get("endpoint_url") or client_kwargs.get("endpoint_url")
    if endpoint:
        config["endpoint"] = _endpoint(endpoint)
    if client_kwargs.get("region_name"):
        config["region"] = client_kwargs["region_name"]
    for ours, theirs in (
        ("key", "access_key_id"),
        ("secret", "secret_access_key"),
        ("token", "session_token"),
    ):
        if options.get(ours):
            config[theirs] = options[ours]
    if options.get("anon"):
        config["skip_signature"] = True
    endpoint = (
        config.get("endpoint") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    )
    return config, endpoint


def _gcs_config(options: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    # ``project`` is accepted for gcsfs compatibility: object requests do not need it.
    endpoint = options.get("endpoint_url")
    emulator = os.environ.get("STORAGE_EMULATOR_HOST", "")
    if not endpoint and emulator not in ("", "default"):
        endpoint = emulator if "://" in emulator else f"http://{emulator}"
    token = options.get("token")
    if token is None and endpoint and emulator not in ("", "default"):
        token = "anon"  # as Google's own clients do against an emulator
    config: dict[str, Any] = {}
    if endpoint:
        config["base_url"] = _endpoint(endpoint)
    if token == "anon":
        # object_store's documented way to send unauthenticated requests (to an emulator).
        config["service_account_key"] = json.dumps(
            {"disable_oauth": True, "client_email": "", "private_key": "", "private_key_id": ""}
        )
    elif isinstance(token, dict):
        config["service_account_key"] = json.dumps(token)
    elif isinstance(token, str) and token not in ("google_default", "cloud"):
        config["service_account"] = token  # a service-account key file
    elif token is not None and token not in ("google_default", "cloud"):
        raise InvalidArgumentError(
            "gs+obstore:// takes token='anon', 'google_default', a key file path or a key dict"
        )
    return config, config.get("base_url")


def _azure_config(options: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    config: dict[str, Any] = {}
    connection_string = options.get("connection_string")
    if connection_string is None and options.get("account_name") is None:
        connection_string = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if connection_string:
        config.update(_parse_connection_string(connection_string))
    for ours, theirs in (
        ("account_name", "account_name"),
        ("account_key", "account_key"),
        ("sas_token", "sas_key"),
    ):
        if options.get(ours):
            config[theirs] = options[ours].lstrip("?") if ours == "sas_token" else options[ours]
    if options.get("account_host"):
        host = str(options["account_host"])
        config["endpoint"] = _endpoint(host if "://" in host else f"https://{host}")
    if options.get("anon"):
        config["skip_signature"] = True
    return config, config.get("endpoint")


def _parse_connection_string(value: str) -> dict[str, Any]:
    """The parts of an Azure Storage connection string obstore understands (obstore has no
    connection-string option; the format is ``Key=Value;...``, values may contain ``=``)."""
    parts = dict(part.split("=", 1) for part in value.split(";") if "=" in part)
    config: dict[str, Any] = {}
    if "AccountName" in parts:
        config["account_name"] = parts["AccountName"]
    if "AccountKey" in parts:
        config["account_key"] = parts["AccountKey"]
    if "SharedAccessSignature" in parts:
        config["sas_key"] = parts["SharedAccessSignature"]
    if "BlobEndpoint" in parts:
        config["endpoint"] = _endpoint(parts["BlobEndpoint"])
    elif "AccountName" in parts:
        protocol = parts.get("DefaultEndpointsProtocol", "https")
        suffix = parts.get("EndpointSuffix", "core.windows.net")
        config["endpoint"] = f"{protocol}://{parts['AccountName']}.blob.{suffix}"
    if not config:
        raise InvalidArgumentError("the Azure connection string names no account, key or endpoint")
    return config


_CONFIGS: dict[Cloud, Callable[[dict[str, Any]], tuple[dict[str, Any], str | None]]] = {
    "s3": _s3_config,
    "gcs": _gcs_config,
    "azure": _azure_config,
}
_STORES: dict[Cloud, Any] = {"s3": S3Store, "gcs": GCSStore, "azure": AzureStore}
