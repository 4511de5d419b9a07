"""Which store a CLI invocation names, and opening it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from objstore_wfp.backends.objectstore import ObjectStoreBackend
from objstore_wfp.errors import InvalidArgumentError, NotFoundError
from objstore_wfp.stores.base import ConditionalStore
from objstore_wfp.stores.counting import CountingStore
from objstore_wfp.stores.urls import local_folder, open_store

#: Where the commands look when ``--store`` is not given.
STORE_ENV = "OBJSTORE_WFP_STORE"
#: Where they look when neither ``--store`` nor :data:`STORE_ENV` says otherwise.
DEFAULT_STORE = "./wfp-data"


@dataclass(frozen=True)
class StoreChoice:
    """The store URL a command uses and where it came from, for error messages."""

    url: str
    #: ``"--store"``, ``"$OBJSTORE_WFP_STORE"`` or ``"default"``.
    source: str

    def missing(self, folder: str) -> NotFoundError:
        """The error for a local store folder that does not exist."""
        hint = {
            "--store": "check --store",
            "default": f"the default store: give --store URL or set {STORE_ENV}; "
            "'objstore-wfp demo' prints where its store is",
        }.get(self.source, f"check {self.source}")
        return NotFoundError(f"no store at {folder}: the folder does not exist ({hint})")


def choose_store(given: str | None) -> StoreChoice:
    """``--store`` if given, else ``$OBJSTORE_WFP_STORE`` if set and not empty, else
    ``./wfp-data``. Reads the environment when called, not when the parser is built."""
    if given is not None:
        return StoreChoice(given, "--store")
    from_env = os.environ.get(STORE_ENV)
    if from_env:
        return StoreChoice(from_env, f"${STORE_ENV}")
    return StoreChoice(DEFAULT_STORE, "default")


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs -> storage options. ``true``/``false`` become booleans and a value
    starting with ``{`` or ``[`` is JSON (``client_kwargs={"region_name": "eu-west-1"}``); every
    other value stays a string. Raises :class:`InvalidArgumentError` for a pair without ``=``
    or with bad JSON.

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


def open_cli_store(choice: StoreChoice, options: dict[str, Any], *, create: bool = False) -> ConditionalStore:
    """The store ``choice`` names. A local folder that does not exist is a
    :class:`NotFoundError` unless ``create``: a mistyped path must not look like an empty store,
    nor leave a new folder behind. Raises what :func:`open_store` raises for a bad URL."""
    folder = local_folder(choice.url)
    if not create and folder is not None and not Path(folder).expanduser().is_dir():
        raise choice.missing(folder)
    return open_store(choice.url, **options)


def open_cli_backend(
    choice: StoreChoice, options: dict[str, Any], *, writes: bool, create: bool = False, count: bool = False
) -> ObjectStoreBackend:
    """The backend for a command. Read-only commands skip the conditional-write probe (they
    take no claims and must work with read-only credentials); writing ones probe the store once.
    ``create`` as for :func:`open_cli_store`. With ``count`` the store is wrapped in a
    :class:`CountingStore` (``backend.store``)."""
    store = open_cli_store(choice, options, create=create)
    if count:
        store = CountingStore(store)
    return ObjectStoreBackend(store, verify_conditional_writes=writes)
