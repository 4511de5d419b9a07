"""Opening the store a CLI invocation names."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from objstore_wfp.backends.objectstore import ObjectStoreBackend
from objstore_wfp.errors import InvalidArgumentError, NotFoundError
from objstore_wfp.stores.base import ConditionalStore
from objstore_wfp.stores.counting import CountingStore
from objstore_wfp.stores.urls import open_store

#: Where the commands look when neither ``--store`` nor this variable says otherwise.
STORE_ENV = "OBJSTORE_WFP_STORE"
DEFAULT_STORE = "./wfp-data"


def default_store() -> str:
    return os.environ.get(STORE_ENV) or DEFAULT_STORE


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs -> storage options. ``true``/``false`` become booleans and a value
    starting with ``{`` or ``[`` is JSON (``client_kwargs={"region_name": "eu-west-1"}``); every
    other value stays a string.

    >>> parse_options(["endpoint_url=http://127.0.0.1:9000", "anon=true", 'client_kwargs={"a": 1}'])
    {'endpoint_url': 'http://127.0.0.1:9000', 'anon': True, 'client_kwargs': {'a': 1}}
    """
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidArgumentError(f"storage option must be KEY=VALUE, got {pair!r}")
        if value[:1] in ("{", "["):
            try:
                options[key] = json.loads(value)
            except json.JSONDecodeError as exc:
                raise InvalidArgumentError(f"storage option {key}: not valid JSON ({exc})") from None
        else:
            options[key] = {"true": True, "false": False}.get(value.lower(), value)
    return options


def local_root(url: str) -> Path | None:
    """The folder of a local-disk URL (a plain path or ``file://``), else ``None``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return Path(url).expanduser()
    return Path(rest).expanduser() if scheme.lower() in ("file", "local") else None


def open_cli_store(url: str, options: dict[str, Any], *, must_exist: bool) -> ConditionalStore:
    """The store for ``url``; with ``must_exist`` a missing local folder is an error rather
    than silently created, so a mistyped path does not look like an empty store."""
    root = local_root(url)
    if must_exist and root is not None and not root.is_dir():
        raise NotFoundError(f"no store at {root} (give --store, or run 'objstore-wfp demo' first)")
    return open_store(url, **options)


def open_cli_backend(
    url: str, options: dict[str, Any], *, writes: bool, count: bool = False
) -> ObjectStoreBackend:
    """The backend for a command. Read-only commands skip the conditional-write probe (they
    take no claims and must work with read-only credentials); writing ones probe the store once.
    With ``count`` the store is wrapped in a :class:`CountingStore` (``backend.store``)."""
    store = open_cli_store(url, options, must_exist=not writes)
    if count:
        store = CountingStore(store)
    return ObjectStoreBackend(store, verify_conditional_writes=writes)
