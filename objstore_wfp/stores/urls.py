"""Open a :class:`~objstore_wfp.stores.base.ConditionalStore` from an fsspec-style URL."""

from __future__ import annotations

from typing import Any, Literal

from objstore_wfp.errors import InvalidArgumentError, UnsupportedStoreError
from objstore_wfp.stores.base import ConditionalStore

_CLOUD_SCHEMES: dict[str, Literal["s3", "gcs", "azure"]] = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "az": "azure",
    "abfs": "azure",
    "abfss": "azure",
}


def open_store(url: str, **storage_options: Any) -> ConditionalStore:
    """The store a URL names: a plain path or ``file://`` (local disk), ``memory://``,
    ``s3://bucket/prefix``, ``gs://bucket/prefix`` or ``az://container/prefix``. A cloud scheme
    with ``+obstore`` (``s3+obstore://``, ``gs+obstore://``, ``az+obstore://``) selects the
    obstore adapter (:mod:`objstore_wfp.stores.obstore`, the ``obstore`` extra) for the same store.

    Storage options go to the cloud filesystem (s3fs, gcsfs, adlfs) unchanged, or are mapped to
    obstore's by their fsspec names; local disk and memory take none.

    >>> open_store("memory://doctest").url
    'memory://doctest'
    """
    if not isinstance(url, str) or not url:
        raise InvalidArgumentError(f"store URL must be a non-empty str, got {url!r}")
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "file", url
    scheme = scheme.lower()
    if scheme in ("file", "local", "memory"):
        if storage_options:
            raise InvalidArgumentError(
                f"{scheme}:// takes no storage options, got {', '.join(sorted(storage_options))}"
            )
        if scheme == "memory":
            from objstore_wfp.stores.memory import MemoryStore

            return MemoryStore(rest)
        from objstore_wfp.stores.local import LocalStore

        return LocalStore(rest)
    cloud, _, client = scheme.partition("+")
    kind = _CLOUD_SCHEMES.get(cloud)
    if kind is None or client not in ("", "obstore"):
        raise UnsupportedStoreError(
            f"no store for {scheme}:// (use a path, file://, memory://, s3://, gs:// or az://, "
            "or a cloud scheme with +obstore)"
        )
    try:
        if client:
            from objstore_wfp.stores.obstore import ObstoreStore

            return ObstoreStore(kind, rest, **storage_options)
        if kind == "s3":
            from objstore_wfp.stores.s3 import S3Store

            return S3Store(rest, **storage_options)
        if kind == "gcs":
            from objstore_wfp.stores.gcs import GCSStore

            return GCSStore(rest, **storage_options)
        from objstore_wfp.stores.azure import AzureBlobStore

        return AzureBlobStore(rest, **storage_options)
    except ImportError as exc:
        extra = client or {"s3": "s3", "gcs": "gcs", "azure": "azure"}[kind]
        raise UnsupportedStoreError(
            f"{scheme}:// needs the '{extra}' extra: pip install 'objstore-wfp[{extra}]' ({exc})"
        ) from exc
