"""Check that a store enforces the conditional writes claims and CAS rely on.

Some stores accept ``If-None-Match`` / ``If-Match`` and silently ignore them (s3rver,
``rclone serve s3``, gcp-storage-emulator): on such a store two workers would both "win" a claim.
:func:`probe_store` finds out with a handful of requests under a unique ``_probe/<uuid>`` key and
refuses a store that overwrites. :class:`~objstore_wfp.backends.objectstore.ObjectStoreBackend`
runs it once when it opens a store, unless the caller explicitly opts out (at their own risk: claims
are then only as exclusive as the store makes them).

:func:`check_botocore_conditions` is the S3-specific pre-check: s3fs silently drops keyword
arguments the installed botocore does not know, which would turn a conditional write into an
overwrite without any request ever failing. :class:`~objstore_wfp.stores.s3.S3Store` runs it when
constructed.
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from dataclasses import dataclass

from objstore_wfp.errors import BackendError, UnsupportedStoreError
from objstore_wfp.stores.base import ConditionalStore

#: Parameters every S3 operation we use must know, per botocore operation name.
_S3_CONDITION_PARAMETERS = {"PutObject": ("IfNoneMatch", "IfMatch"), "DeleteObject": ("IfMatch",)}


@dataclass(frozen=True)
class ProbeReport:
    """What a store enforced when probed."""

    #: The store probed (its ``url``).
    store: str
    #: ``put_if_absent`` on an existing key wrote nothing and reported ``None``.
    create_if_absent: bool
    #: ``put_if_version`` with a stale version wrote nothing; with the current one it swapped.
    compare_and_swap: bool
    #: ``delete_if_version`` with a stale version kept the object; with the current one deleted it.
    #: When ``False`` the probe has set the store's ``supports_conditional_delete`` to ``False``.
    conditional_delete: bool
    #: Why conditional delete is unavailable, when it is.
    note: str = ""


@functools.cache
def _s3_input_members(operation: str) -> frozenset[str]:
    import botocore.session

    # Loading the S3 model takes ~0.1 s: once per process is enough.
    model = botocore.session.get_session().get_service_model("s3")
    return frozenset(model.operation_model(operation).input_shape.members)


def check_botocore_conditions() -> None:
    """Raise :class:`UnsupportedStoreError` unless the installed botocore's S3 model knows
    ``IfNoneMatch`` and ``IfMatch`` on PutObject and ``IfMatch`` on DeleteObject."""
    import botocore

    missing = [
        f"{operation}.{name}"
        for operation, names in _S3_CONDITION_PARAMETERS.items()
        for name in names
        if name not in _s3_input_members(operation)
    ]
    if missing:
        raise UnsupportedStoreError(
            f"botocore {botocore.__version__} does not know {', '.join(missing)}: conditional writes "
            "would be silently dropped; install botocore >= 1.35.69 (and a matching aiobotocore)"
        )


async def probe_store(store: ConditionalStore) -> ProbeReport:
    """Verify that ``store`` enforces create-if-absent, compare-and-swap and conditional delete.

    Writes, rewrites and deletes one object under ``_probe/<uuid>`` (about ten requests) and
    removes it whatever happens. Raises :class:`UnsupportedStoreError`, naming the store and the
    failed check, when create-if-absent or compare-and-swap is not enforced. A store without
    conditional delete is accepted: the report says so and ``store.supports_conditional_delete``
    is set to ``False`` so that the backend uses its fallback.
    """
    key = f"_probe/{uuid.uuid4().hex}"
    try:
        report = await _probe(store, key)
    except BaseException:
        # Clean up without masking the reason the probe failed.
        with contextlib.suppress(BackendError):
            await store.delete(key)
        raise
    await store.delete(key)
    return report


async def _probe(store: ConditionalStore, key: str) -> ProbeReport:
    first, second, third = (f"objstore-wfp probe {key} {n}".encode() for n in ("one", "two", "three"))

    def refuse(check: str, what: str) -> UnsupportedStoreError:
        return UnsupportedStoreError(
            f"{store.url} does not enforce {check}: {what}. Claims and compare-and-swap would not "
            "be exclusive on this store"
        )

    async def holds(data: bytes) -> bool:
        found = await store.get(key)
        return found is not None and found.data == data

    v1 = await store.put_if_absent(key, first)
    if v1 is None or not await holds(first):
        raise refuse("create-if-absent", "creating a fresh object was refused or not stored")
    if await store.put_if_absent(key, second) is not None or not await holds(first):
        raise refuse("create-if-absent", "a second put-if-absent on an existing object was accepted")

    v2 = await store.put_if_version(key, second, v1)
    if v2 is None or not await holds(second):
        raise refuse("compare-and-swap", "a put-if-version with the current version was refused")
    if await store.put_if_version(key, third, v1) is not None or not await holds(second):
        raise refuse("compare-and-swap", "a put-if-version with a stale version was accepted")

    conditional_delete, note = await _probe_conditional_delete(store, key, stale=v1, current=v2)
    if not conditional_delete:
        store.supports_conditional_delete = False
    return ProbeReport(store.url, True, True, conditional_delete, note)


async def _probe_conditional_delete(
    store: ConditionalStore, key: str, *, stale: str, current: str
) -> tuple[bool, str]:
    if not store.supports_conditional_delete:
        return False, "the adapter does not offer conditional delete"
    try:
        if await store.delete_if_version(key, stale) or await store.get(key) is None:
            return False, "a delete-if-version with a stale version deleted the object"
        if not await store.delete_if_version(key, current) or await store.get(key) is not None:
            return False, "a delete-if-version with the current version did not delete the object"
    except UnsupportedStoreError as exc:
        return False, str(exc)
    return True, ""
