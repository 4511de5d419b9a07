"""``az://container/prefix`` (also ``abfs://``): Azure Blob Storage through azure-storage-blob's
async client.

Conditions ride on ETags, which change on every write (no ABA):

- create-if-absent: Put Blob with ``If-None-Match: *`` (fails with 409 BlobAlreadyExists);
- compare-and-swap: Put Blob with ``If-Match: <etag>`` (fails with 412 ConditionNotMet);
- conditional delete: Delete Blob with ``If-Match: <etag>`` (412);
- the version is the ETag, always in its quoted form.

The SDK is used directly rather than through adlfs because adlfs's ``rm_file`` drops ETag
conditions, and with the SDK's own retries switched off (``retry_total=0``): a conditional write
retried out of sight cannot tell its own earlier, applied attempt from a competitor's (see
:mod:`objstore_wfp.stores._retry`).

Each event loop that uses a store gets its own SDK client (and credential chain, where the
store makes one), closed when that loop closes or on ``close()`` (see
:mod:`objstore_wfp.stores._perloop`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import AioHttpTransport
from azure.storage.blob.aio import BlobServiceClient, ContainerClient

from objstore_wfp.errors import InvalidArgumentError, StoreUnavailableError
from objstore_wfp.stores._perloop import PerLoop
from objstore_wfp.stores._retry import RetryPolicy, TransientError, with_retries, without_hidden_retries
from objstore_wfp.stores.base import ConditionalStore, ListedObject, StoredObject, server_age

T = TypeVar("T")

#: HTTP statuses worth another attempt (Azure throttles with 503 ServerBusy and 500 OperationTimedOut).
_TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})
#: Blobs per LIST page: Azure's maximum.
_PAGE_SIZE = 5000
#: The storage options understood, named as adlfs names them.
_OPTIONS = frozenset(
    {"account_name", "account_key", "connection_string", "sas_token", "credential", "account_host", "anon"}
)


class AzureBlobStore(ConditionalStore):
    """Blobs under ``az://container/prefix``; ``path`` is ``"container/prefix"`` (the URL without
    its scheme; the prefix may be empty).

    Credentials, in this order (adlfs's option names, the Azure CLI's environment variables):

    1. ``connection_string``, else ``AZURE_STORAGE_CONNECTION_STRING`` when no ``account_name`` is
       given;
    2. ``account_name`` (or ``AZURE_STORAGE_ACCOUNT_NAME``) with ``account_key``
       (``AZURE_STORAGE_ACCOUNT_KEY``), ``sas_token`` (``AZURE_STORAGE_SAS_TOKEN``), a
       ``credential`` object (e.g. from azure-identity), or ``anon=True`` for public containers;
       with none of these, azure-identity's ``DefaultAzureCredential`` chain (environment,
       workload identity, managed identity, Azure CLI, ...).

    ``account_host`` overrides the blob endpoint host (default ``<account>.blob.core.windows.net``).
    """

    def __init__(self, path: str, *, retry: RetryPolicy | None = None, **storage_options: Any) -> None:
        container, _, prefix = path.strip("/").partition("/")
        if "@" in container:  # abfs://container@account.dfs.core.windows.net/prefix
            container, _, host = container.partition("@")
            storage_options.setdefault("account_name", host.split(".", 1)[0])
        if not container:
            raise InvalidArgumentError(f"no Azure container in {path!r} (expected container/prefix)")
        unknown = set(storage_options) - _OPTIONS
        if unknown:
            raise InvalidArgumentError(
                f"unknown Azure storage options {sorted(unknown)}; expected some of {sorted(_OPTIONS)}"
            )
        self._container_name = container
        self._prefix = prefix.strip("/")
        self._retry = retry or RetryPolicy()
        self._options = storage_options
        self._connect()  # checks the options now (no request is sent): fail here, not on first use
        self._clients: PerLoop[_Clients] = PerLoop(
            self._open, _Clients.close, f"the Azure client of {self.url}"
        )

    async def _open(self) -> _Clients:
        # One SDK client (and credential chain, where this store makes one) per event loop:
        # their aiohttp sessions belong to the loop that made them.
        return self._connect()

    def _connect(self) -> _Clients:
        service, owned_credential = self._client(self._options)
        return _Clients(service, service.get_container_client(self._container_name), owned_credential)

    def _client(self, options: dict[str, Any]) -> tuple[BlobServiceClient, Any]:
        """The service client and the credential made for it here (to be closed with it), if any."""
        # Our own retries replace the SDK's and aiohttp's (see the module docstring).
        transport = _Transport(
            connection_timeout=self._retry.request_timeout, read_timeout=self._retry.request_timeout
        )
        kwargs: dict[str, Any] = {"retry_total": 0, "transport": transport}
        env = os.environ
        account = options.get("account_name")
        connection_string = options.get("connection_string")
        if connection_string is None and account is None:
            connection_string = env.get("AZURE_STORAGE_CONNECTION_STRING")
        try:
            if connection_string:
                service = BlobServiceClient.from_connection_string(
                    connection_string, credential=options.get("credential"), **kwargs
                )
                return service, None
            account = account or env.get("AZURE_STORAGE_ACCOUNT_NAME")
            if not account:
                raise InvalidArgumentError(
                    "Azure needs account_name (or AZURE_STORAGE_ACCOUNT_NAME) or connection_string "
                    "(or AZURE_STORAGE_CONNECTION_STRING)"
                )
            host = options.get("account_host") or f"{account}.blob.core.windows.net"
            account_url = host if "://" in host else f"https://{host}"
            credential, owned = self._credential(account, options)
            service = BlobServiceClient(account_url, credential=credential, **kwargs)
            return service, credential if owned else None
        except (ValueError, AzureError) as exc:
            if isinstance(exc, InvalidArgumentError):
                raise
            raise StoreUnavailableError(f"cannot open {self.url}: {exc}") from exc

    def _credential(self, account: str, options: dict[str, Any]) -> tuple[Any, bool]:
        """The credential, and whether it was made here."""
        # Explicit options first, then the environment, so that e.g. anon=True means anonymous
        # even where AZURE_STORAGE_ACCOUNT_KEY happens to be set.
        if options.get("credential") is not None:
            return options["credential"], False
        if options.get("account_key"):
            return {"account_name": account, "account_key": options["account_key"]}, False
        if options.get("sas_token"):
            return options["sas_token"], False
        if options.get("anon"):
            return None, False
        if os.environ.get("AZURE_STORAGE_ACCOUNT_KEY"):
            return {"account_name": account, "account_key": os.environ["AZURE_STORAGE_ACCOUNT_KEY"]}, False
        if os.environ.get("AZURE_STORAGE_SAS_TOKEN"):
            return os.environ["AZURE_STORAGE_SAS_TOKEN"], False
        try:
            from azure.identity.aio import DefaultAzureCredential
        except ImportError as exc:
            raise InvalidArgumentError(
                f"no Azure credentials for account {account!r}: give account_key, sas_token, "
                "credential or connection_string, or install azure-identity"
            ) from exc
        return DefaultAzureCredential(), True

    @property
    def url(self) -> str:
        base = f"az://{self._container_name}"
        return f"{base}/{self._prefix}" if self._prefix else base

    # -- plumbing -------------------------------------------------------------------------------

    def _name(self, key: str) -> str:
        return f"{self._prefix}/{key}" if self._prefix else key

    async def _blob(self, key: str) -> Any:
        return (await self._clients.get()).container.get_blob_client(self._name(key))

    async def _call(self, what: str, make: Callable[[], Awaitable[T]]) -> T:
        """One SDK call. Not-found, exists and condition errors pass through for the caller to
        read; throttling, 5xx and connection failures become :class:`TransientError`; anything
        else becomes :class:`StoreUnavailableError`."""
        try:
            return await make()
        except (ResourceNotFoundError, ResourceExistsError, ResourceModifiedError) as exc:
            if _code(exc) == "ContainerNotFound":
                raise StoreUnavailableError(f"{what}: container {self._container_name!r} not found") from exc
            raise
        except (ServiceRequestError, ServiceResponseError) as exc:
            # azure-core reports a connection cut after sending as a ServiceRequestError too: only
            # a connection that could not be opened proves the request was never seen.
            unsent = isinstance(exc.__cause__, aiohttp.ClientConnectorError)
            raise TransientError(exc, maybe_applied=not unsent) from exc
        except HttpResponseError as exc:
            if exc.status_code in _TRANSIENT or exc.status_code is None:  # None: a torn response body
                raise TransientError(exc, maybe_applied=exc.status_code != 429) from exc
            raise StoreUnavailableError(f"{what}: HTTP {exc.status_code} {_code(exc)}: {exc.reason}") from exc
        except (AzureError, OSError) as exc:
            raise StoreUnavailableError(f"{what}: {exc}") from exc

    async def _get_once(self, key: str) -> StoredObject | None:
        what = f"{self.url}: read {key!r}"

        async def read() -> StoredObject:
            answered: list[str] = []  # the first response's Date: the server's time on reading

            def hook(response: Any) -> None:
                answered.append(response.http_response.headers.get("Date", ""))

            downloader = await (await self._blob(key)).download_blob(raw_response_hook=hook)
            data = await downloader.readall()
            age = server_age(downloader.properties.last_modified, answered[0] if answered else None)
            return StoredObject(bytes(data), _etag(downloader.properties.etag), age)

        try:
            return await self._call(what, read)
        except ResourceNotFoundError:
            return None
        except (ResourceModifiedError, ResourceExistsError) as exc:
            # A blob large enough to be read in ranges changed between two of them (the SDK
            # pins later ranges to the first one's ETag): read it again.
            raise TransientError(exc, maybe_applied=False) from exc

    async def _is_ours(self, key: str, data: bytes) -> str | None:
        """After an ambiguous attempt: the version of ``key`` if it holds exactly ``data``."""
        found = await self._get_once(key)
        return found.version if found is not None and found.data == data else None

    async def _write(self, key: str, data: bytes, condition: dict[str, Any]) -> str | None:
        what = f"{self.url}: write {key!r}"

        async def attempt(maybe_applied: bool) -> str | None:
            async def upload() -> dict[str, Any]:
                blob = await self._blob(key)
                result: dict[str, Any] = await blob.upload_blob(data, overwrite=True, **condition)
                return result

            try:
                return _etag((await self._call(what, upload))["etag"])
            except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as exc:
                if not condition or (
                    isinstance(exc, ResourceExistsError) and _code(exc) != "BlobAlreadyExists"
                ):
                    raise StoreUnavailableError(f"{what}: {_code(exc)}: {exc.reason}") from exc
                # The condition is false now. If an earlier attempt may have gone through, the blob
                # may hold our own write.
                return await self._is_ours(key, data) if maybe_applied else None

        return await with_retries(self._retry, what, attempt)

    async def _delete(self, key: str, condition: dict[str, Any]) -> bool:
        what = f"{self.url}: delete {key!r}"

        async def attempt(maybe_applied: bool) -> bool:
            async def delete() -> None:
                await (await self._blob(key)).delete_blob(**condition)

            try:
                await self._call(what, delete)
            except ResourceNotFoundError:
                # Gone: deleted by us in an attempt whose answer was lost, or by someone else
                # after our version was current; either way nothing at our version remains.
                return not condition or maybe_applied
            except (ResourceModifiedError, ResourceExistsError) as exc:
                if not condition:
                    raise StoreUnavailableError(f"{what}: {_code(exc)}: {exc.reason}") from exc
                # Azure answers 412 for a missing blob too: after an ambiguous attempt, a blob
                # that is gone counts as deleted (as for 404 above).
                return maybe_applied and await self._get_once(key) is None
            return True

        return await with_retries(self._retry, what, attempt)

    # -- the interface ------------------------------------------------------------------------

    async def get(self, key: str) -> StoredObject | None:
        async def attempt(_: bool) -> StoredObject | None:
            return await self._get_once(key)

        return await with_retries(self._retry, f"{self.url}: read {key!r}", attempt)

    async def put(self, key: str, data: bytes) -> str:
        version = await self._write(key, data, {})
        assert version is not None  # an unconditional write has no condition to fail
        return version

    async def put_if_absent(self, key: str, data: bytes) -> str | None:
        return await self._write(key, data, {"match_condition": MatchConditions.IfMissing})

    async def put_if_version(self, key: str, data: bytes, version: str) -> str | None:
        return await self._write(key, data, _if_match(version))

    async def delete(self, key: str) -> None:
        await self._delete(key, {})

    async def delete_if_version(self, key: str, version: str) -> bool:
        return await self._delete(key, _if_match(version))

    async def list(self, prefix: str, *, start_after: str | None = None) -> AsyncIterator[ListedObject]:
        # Azure lists blobs in byte order of their names. There is no portable server-side
        # "start after" (the newer startFrom parameter is not honoured by Azurite), so keys up to
        # start_after are skipped here.
        root = f"{self._prefix}/" if self._prefix else ""
        what = f"{self.url}: list {prefix!r}"
        token: str | None = None
        while True:

            async def page(_: bool, token: str | None = token) -> tuple[list[ListedObject], str | None]:
                async def fetch() -> tuple[list[ListedObject], str | None]:
                    container = (await self._clients.get()).container
                    pages: Any = container.list_blobs(
                        name_starts_with=root + prefix, results_per_page=_PAGE_SIZE
                    ).by_page(continuation_token=token)
                    items = [
                        ListedObject(b.name[len(root) :], _etag(b.etag)) async for b in await anext(pages)
                    ]
                    return items, pages.continuation_token

                try:
                    return await self._call(what, fetch)
                except (ResourceNotFoundError, ResourceExistsError, ResourceModifiedError) as exc:
                    raise StoreUnavailableError(f"{what}: {_code(exc)}: {exc.reason}") from exc

            items, token = await with_retries(self._retry, what, page)
            for item in items:
                if start_after is None or item.key > start_after:
                    yield item
            if not token:
                return

    async def close(self) -> None:
        """Close the HTTP sessions (and the credential chains this store made) of every event
        loop (see :mod:`objstore_wfp.stores._perloop`)."""
        await self._clients.aclose()


@dataclass(frozen=True)
class _Clients:
    """One event loop's SDK clients."""

    service: BlobServiceClient
    container: ContainerClient
    #: The credential chain made for this client (closed with it), or ``None``.
    owned_credential: Any

    async def close(self) -> None:
        await self.service.close()
        if self.owned_credential is not None:
            await self.owned_credential.close()


class _Transport(AioHttpTransport):  # type: ignore[misc]
    """azure-core's aiohttp transport, without aiohttp's hidden resend of PUT and DELETE."""

    async def open(self) -> None:
        await super().open()
        if self.session is not None:
            without_hidden_retries(self.session)


def _etag(etag: str) -> str:
    # Listings give ETags bare, reads and writes give them quoted: one form for every version.
    return etag if etag.startswith('"') else f'"{etag}"'


def _if_match(version: str) -> dict[str, Any]:
    if not version or version == "*":
        raise InvalidArgumentError(f"not an Azure ETag: {version!r}")
    return {"etag": version, "match_condition": MatchConditions.IfNotModified}


def _code(exc: HttpResponseError) -> str:
    return str(getattr(exc, "error_code", None) or "")
