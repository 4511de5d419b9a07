"""Opening a backend from a store URL."""

from __future__ import annotations

from typing import Any

from objstore_wfp.contract import PersistentBackend


def open_backend(url: str, **storage_options: Any) -> PersistentBackend:
    """The object-store backend for ``url``: a plain path or ``file://`` (local disk),
    ``memory://``, ``s3://bucket/prefix``, ``gs://...``, ``az://...``. Storage options go to
    fsspec unchanged."""
    # Imported here so the runtime stays importable (and testable on InMemoryBackend) without
    # pulling in fsspec's store adapters.
    from objstore_wfp.backends.objectstore import ObjectStoreBackend

    return ObjectStoreBackend.from_url(url, **storage_options)
