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
_LOCAL_SCHEMES = ("file", "local")
_KNOWN_SCHEMES = (*_LOCAL_SCHEMES, "memory", *_CLOUD_SCHEMES)


def split_store_url(url: str) -> tuple[str, str]:
    """``(scheme, rest)`` of a store URL: the scheme lower-cased (``file`` for a plain path),
    ``rest`` what follows ``://`` (a folder, a memory name, ``bucket/prefix``).

    Raises :class:`InvalidArgumentError` for an empty URL, ``file://`` without a folder, a cloud
    URL without a bucket or container (``s3:///prefix``) and a path that looks like a URL with
    one slash (``s3:/bucket``); :class:`UnsupportedStoreError` for an unknown scheme.

    >>> split_store_url("S3://bucket/wf")
    ('s3', 'bucket/wf')
    >>> split_store_url("./wfp-data")
    ('file', './wfp-data')
    >>> split_store_url("s3:///wf")
    Traceback (most recent call last):
    ...
    objstore_wfp.errors.InvalidArgumentError: 's3:///wf' names no bucket: write s3://BUCKET/prefix
    """
    if not isinstance(url, str) or not url:
        raise InvalidArgumentError(f"store URL must be a non-empty str, got {url!r}")
    scheme, sep, rest = url.partition("://")
    if not sep:
        head, colon, _ = url.partition(":")
        if colon and head.lower() in _KNOWN_SCHEMES:
            raise InvalidArgumentError(f"{url!r} is not a URL: write {head}://... (two slashes)")
        return "file", url
    scheme = scheme.lower()
    cloud, plus, client = scheme.partition("+")
    if plus and (client != "obstore" or cloud not in _CLOUD_SCHEMES):
        raise UnsupportedStoreError(
            f"no store for {scheme}:// (the obstore adapter takes s3+obstore://, gs+obstore:// "
            "or az+obstore://)"
        )
    if scheme in _LOCAL_SCHEMES and not rest:
        raise InvalidArgumentError(f"{url!r} names no folder: write {scheme}:///absolute/path")
    kind = _CLOUD_SCHEMES.get(cloud)
    if kind is None and scheme not in (*_LOCAL_SCHEMES, "memory"):
        raise UnsupportedStoreError(
            f"no store for {scheme}:// (use a path, file://, memory://, s3://, gs:// or az://, "
            "or a cloud scheme with +obstore)"
        )
    if kind is not None and not rest.partition("/")[0]:
        container = "container" if kind == "azure" else "bucket"
        raise InvalidArgumentError(
            f"{url!r} names no {container}: write {scheme}://{container.upper()}/prefix"
        )
    return scheme, rest


def open_store(url: str, **storage_options: Any) -> ConditionalStore:
    """The store a URL names: a plain path or ``file://`` (local disk), ``memory://``,
    ``s3://bucket/prefix``, ``gs://bucket/prefix`` or ``az://container/prefix``. A cloud scheme
    with ``+obstore`` (``s3+obstore://``, ``gs+obstore://``, ``az+obstore://``) selects the
    obstore adapter (:mod:`objstore_wfp.stores.obstore`, the ``obstore`` extra) for the same store.

    Storage options go to the cloud filesystem (s3fs, gcsfs, adlfs) unchanged, or are mapped to
    obstore's by their fsspec names; local disk and memory take none. Errors: those of
    :func:`split_store_url`; :class:`InvalidArgumentError` for storage options given to a local
    or memory store; :class:`UnsupportedStoreError` when the store's extra is not installed.

    >>> open_store("memory://doctest").url
    'memory://doctest'
    """
    scheme, rest = split_store_url(url)
    cloud, _, client = scheme.partition("+")
    kind = _CLOUD_SCHEMES.get(cloud)
    if kind is None:
        if storage_options:
            raise InvalidArgumentError(
                f"{scheme}:// takes no storage options, got {', '.join(sorted(storage_options))}"
            )
        if scheme == "memory":
            from objstore_wfp.stores.memory import MemoryStore

            return MemoryStore(rest)
        from objstore_wfp.stores.local import LocalStore

        return LocalStore(rest)
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
        extra = client or kind
        raise UnsupportedStoreError(
            f"{scheme}:// needs the '{extra}' extra: pip install 'objstore-wfp[{extra}]' ({exc})"
        ) from exc


def local_folder(url: str) -> str | None:
    """The folder of a local-disk URL (a plain path, ``file://`` or ``local://``), else ``None``.
    Raises what :func:`split_store_url` raises.

    >>> local_folder("file:///srv/wf"), local_folder("memory://x")
    ('/srv/wf', None)
    """
    scheme, rest = split_store_url(url)
    return rest if scheme in _LOCAL_SCHEMES else None
