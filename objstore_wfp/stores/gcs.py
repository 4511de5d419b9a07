"""``gs://bucket/prefix``: Google Cloud Storage through the JSON API, with gcsfs's credentials.

Conditions ride on GCS generations, which change on every write (no ABA):

- create-if-absent: multipart upload with ``ifGenerationMatch=0``;
- compare-and-swap: multipart upload with ``ifGenerationMatch=<generation>``;
- conditional delete: ``DELETE`` with ``ifGenerationMatch=<generation>``;
- a failed condition is HTTP 412; the version is the generation, as a decimal string.

gcsfs supplies the authentication chain (``token=`` as gcsfs takes it: Application Default
Credentials, a service-account file, ``"anon"``, ...), the endpoint (``endpoint_url`` or
``STORAGE_EMULATOR_HOST``) and the HTTP session. Requests are sent here rather than through gcsfs's
own helpers because those retry internally: a conditional write retried out of sight cannot tell
its own earlier, applied attempt from a competitor's (see :mod:`objstore_wfp.stores._retry`).

Every upload is a single-request ``uploadType=multipart`` upload carrying the MD5 of the bytes, so
GCS rejects a torn body. It is also the upload path that fake-gcs-server enforces preconditions
on (it ignores them on ``uploadType=media`` and on ``DELETE``); see ``docs/gcs-azure.md``.

Each event loop that uses a store gets its own HTTP session (made as gcsfs makes it), closed
when that loop closes or on ``close()``; credentials are shared (see
:mod:`objstore_wfp.stores._perloop`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
from fsspec.implementations.http import get_client
from gcsfs.core import GCSFileSystem, _client_cert_ssl_context

from objstore_wfp.errors import InvalidArgumentError, StoreUnavailableError, UnsupportedStoreError
from objstore_wfp.stores._perloop import PerLoop
from objstore_wfp.stores._retry import RetryPolicy, TransientError, with_retries, without_hidden_retries
from objstore_wfp.stores.base import ConditionalStore, ListedObject, StoredObject, server_age

#: HTTP statuses worth another attempt. 429 is GCS's per-object rate limit (about one write per
#: second to one name) as well as general throttling.
_TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})
#: Keys per LIST page: GCS's maximum, so a full scan costs as few requests as possible.
_PAGE_SIZE = 1000


class GCSStore(ConditionalStore):
    """Objects under ``gs://bucket/prefix``; ``path`` is ``"bucket/prefix"`` (the URL without its
    scheme; the prefix may be empty).

    ``storage_options`` go to :class:`gcsfs.GCSFileSystem` unchanged (``project``, ``token``,
    ``endpoint_url``, ``requester_pays``, ``session_kwargs``, ...). With ``STORAGE_EMULATOR_HOST``
    set and no ``token`` given, requests are anonymous, as Google's own clients do.

    Real GCS enforces conditional deletes; fake-gcs-server does not, and
    :func:`~objstore_wfp.stores.probe.probe_store` then sets ``supports_conditional_delete`` to
    ``False`` on the instance, after which ``delete_if_version`` raises ``UnsupportedStoreError``
    and the backend retires objects by CAS before deleting them.
    """

    def __init__(
        self,
        path: str,
        *,
        retry: RetryPolicy | None = None,
        **storage_options: Any,
    ) -> None:
        bucket, _, prefix = path.strip("/").partition("/")
        if not bucket:
            raise InvalidArgumentError(f"no GCS bucket in {path!r} (expected bucket/prefix)")
        self._bucket = bucket
        self._prefix = prefix.strip("/")
        self._retry = retry or RetryPolicy()
        options = dict(storage_options)
        if "token" not in options and os.environ.get("STORAGE_EMULATOR_HOST", "") not in ("", "default"):
            options["token"] = "anon"
        try:
            self._fs = GCSFileSystem(asynchronous=True, skip_instance_cache=True, **options)
        except Exception as exc:  # gcsfs raises a variety of errors for bad credentials/options
            raise StoreUnavailableError(f"cannot open {self.url}: {exc}") from exc
        self._sessions: PerLoop[aiohttp.ClientSession] = PerLoop(
            self._open_session, aiohttp.ClientSession.close, f"the HTTP session of {self.url}"
        )

    @property
    def url(self) -> str:
        return f"gs://{self._bucket}/{self._prefix}" if self._prefix else f"gs://{self._bucket}"

    # -- plumbing -------------------------------------------------------------------------------

    def _name(self, key: str) -> str:
        return f"{self._prefix}/{key}" if self._prefix else key

    def _object_url(self, name: str) -> str:
        return f"{self._fs._location}/storage/v1/b/{quote(self._bucket, safe='')}/o/{quote(name, safe='')}"

    async def _request(
        self,
        method: str,
        url: str,
        params: Mapping[str, str],
        *,
        data: bytes | None = None,
        content_type: str | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One HTTP request: ``(status, headers, body)`` for any status that is not transient;
        :class:`TransientError` for throttling, 5xx, timeouts and broken connections."""
        session = await self._sessions.get()
        try:
            # Refreshes an expiring token in place (blocking, as gcsfs itself does, about once
            # an hour) and adds the Authorization header.
            headers: dict[str, str] = self._fs._get_headers(None)
        except Exception as exc:  # google-auth refresh failures: network or credentials
            raise TransientError(exc, maybe_applied=False) from exc
        if content_type is not None:
            headers["Content-Type"] = content_type
        query = dict(self._fs._get_params(dict(params)))
        try:
            async with session.request(
                method,
                url,
                params=query,
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self._retry.request_timeout),
            ) as response:
                body = await response.read()
                status = response.status
                response_headers = dict(response.headers)
        except aiohttp.ClientConnectorError as exc:
            raise TransientError(exc, maybe_applied=False) from exc
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise TransientError(exc) from exc
        if status in _TRANSIENT:
            error = StoreUnavailableError(f"{method} {url}: HTTP {status}: {_message(body)}")
            raise TransientError(error, maybe_applied=status != 429)
        return status, response_headers, body

    async def _open_session(self) -> aiohttp.ClientSession:
        # What gcsfs's _set_session makes, once per event loop instead of once per filesystem
        # (an aiohttp session belongs to the loop that made it); credentials stay shared.
        kwargs = dict(self._fs.session_kwargs)
        if self._fs._use_client_cert and "connector" not in kwargs and self._fs._location.startswith("https://"):
            ssl_context = await asyncio.to_thread(_client_cert_ssl_context)
            kwargs["connector"] = aiohttp.TCPConnector(ssl=ssl_context)
        return without_hidden_retries(await get_client(**kwargs))

    def _failure(self, what: str, status: int, body: bytes) -> StoreUnavailableError:
        if status in (401, 403):
            return StoreUnavailableError(f"{what}: access denied (HTTP {status}): {_message(body)}")
        return StoreUnavailableError(f"{what}: HTTP {status}: {_message(body)}")

    async def _upload(self, key: str, data: bytes, generation: str | None) -> tuple[int, bytes]:
        metadata = {"name": self._name(key), "md5Hash": base64.b64encode(hashlib.md5(data).digest()).decode()}
        boundary = secrets.token_hex(16)
        body = b"".join(
            (
                f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
                json.dumps(metadata).encode(),
                f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode(),
                data,
                f"\r\n--{boundary}--\r\n".encode(),
            )
        )
        params = {"uploadType": "multipart"}
        if generation is not None:
            params["ifGenerationMatch"] = generation
        url = f"{self._fs._location}/upload/storage/v1/b/{quote(self._bucket, safe='')}/o"
        status, _, response = await self._request(
            "POST", url, params, data=body, content_type=f'multipart/related; boundary="{boundary}"'
        )
        return status, response

    def _generation_of(self, key: str, response: bytes) -> str:
        try:
            generation = json.loads(response)["generation"]
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreUnavailableError(
                f"{self.url}: upload of {key!r} answered without a generation"
            ) from exc
        return str(generation)

    async def _is_ours(self, key: str, data: bytes) -> str | None:
        """After an ambiguous attempt: the version of ``key`` if it holds exactly ``data``."""
        found = await self._get_once(key)
        return found.version if found is not None and found.data == data else None

    async def _write(self, key: str, data: bytes, generation: str | None) -> str | None:
        what = f"{self.url}: write {key!r}"

        async def attempt(maybe_applied: bool) -> str | None:
            status, response = await self._upload(key, data, generation)
            if status == 200:
                return self._generation_of(key, response)
            if generation is not None and status in (404, 412):
                # The condition is false now. If an earlier attempt may have gone through, the
                # object may hold our own write.
                if maybe_applied:
                    return await self._is_ours(key, data)
                if status == 412 or generation != "0":
                    return None  # 404 on a CAS: the object vanished
            if status == 404:
                raise StoreUnavailableError(f"{what}: bucket {self._bucket!r} not found")
            raise self._failure(what, status, response)

        return await with_retries(self._retry, what, attempt)

    async def _get_once(self, key: str) -> StoredObject | None:
        status, headers, body = await self._request(
            "GET", self._object_url(self._name(key)), {"alt": "media"}
        )
        if status == 404:
            return None
        if status != 200:
            raise self._failure(f"{self.url}: read {key!r}", status, body)
        generation = _header(headers, "x-goog-generation")
        if generation is None:
            raise StoreUnavailableError(f"{self.url}: read {key!r} answered without x-goog-generation")
        age = server_age(_header(headers, "last-modified"), _header(headers, "date"))
        return StoredObject(body, generation, age)

    # -- the interface ------------------------------------------------------------------------

    async def get(self, key: str) -> StoredObject | None:
        async def attempt(_: bool) -> StoredObject | None:
            return await self._get_once(key)

        return await with_retries(self._retry, f"{self.url}: read {key!r}", attempt)

    async def put(self, key: str, data: bytes) -> str:
        version = await self._write(key, data, None)
        assert version is not None  # an unconditional write has no condition to fail
        return version

    async def put_if_absent(self, key: str, data: bytes) -> str | None:
        return await self._write(key, data, "0")

    async def put_if_version(self, key: str, data: bytes, version: str) -> str | None:
        return await self._write(key, data, _generation(version))

    async def delete(self, key: str) -> None:
        await self._delete(key, None)

    async def delete_if_version(self, key: str, version: str) -> bool:
        if not self.supports_conditional_delete:
            raise UnsupportedStoreError(f"{self.url} does not enforce conditional deletes")
        return await self._delete(key, _generation(version))

    async def _delete(self, key: str, generation: str | None) -> bool:
        what = f"{self.url}: delete {key!r}"
        params = {} if generation is None else {"ifGenerationMatch": generation}

        async def attempt(maybe_applied: bool) -> bool:
            status, _, body = await self._request("DELETE", self._object_url(self._name(key)), params)
            if status in (200, 204):
                return True
            if status == 404:
                # Gone: deleted by us in an attempt whose answer was lost, or by someone else
                # after our version was current; either way nothing at our version remains.
                return generation is None or maybe_applied
            if status == 412 and generation is not None:
                return False
            raise self._failure(what, status, body)

        return await with_retries(self._retry, what, attempt)

    async def list(self, prefix: str, *, start_after: str | None = None) -> AsyncIterator[ListedObject]:
        root = f"{self._prefix}/" if self._prefix else ""
        url = f"{self._fs._location}/storage/v1/b/{quote(self._bucket, safe='')}/o"
        params = {
            "prefix": root + prefix,
            "maxResults": str(_PAGE_SIZE),
            "fields": "items(name,generation),nextPageToken",
        }
        if start_after is not None:
            # startOffset is inclusive; the exact key is skipped below.
            params["startOffset"] = root + start_after
        what = f"{self.url}: list {prefix!r}"

        async def attempt(_: bool) -> dict[str, Any]:
            status, _headers, body = await self._request("GET", url, params)
            if status != 200:
                raise self._failure(what, status, body)
            try:
                page: dict[str, Any] = json.loads(body)
            except ValueError as exc:
                raise StoreUnavailableError(f"{what}: unreadable listing") from exc
            return page

        while True:
            page = await with_retries(self._retry, what, attempt)
            for item in page.get("items", []):
                key = item["name"][len(root) :]
                if start_after is not None and key <= start_after:
                    continue
                yield ListedObject(key, str(item["generation"]))
            token = page.get("nextPageToken")
            if not token:
                return
            params["pageToken"] = token

    async def close(self) -> None:
        """Close the HTTP sessions of every event loop (see :mod:`objstore_wfp.stores._perloop`)."""
        await self._sessions.aclose()


def _generation(version: str) -> str:
    if not version.isdigit() or int(version) <= 0:
        raise InvalidArgumentError(f"not a GCS generation: {version!r}")
    return version


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _message(body: bytes) -> str:
    try:
        error = json.loads(body)["error"]
        return str(error.get("message", error)) if isinstance(error, dict) else str(error)
    except (ValueError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace")
