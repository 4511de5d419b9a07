"""The conditional object store: the only I/O surface the object-store backend uses.

Claim, lease, CAS and index logic is written once in
:class:`~objstore_wfp.backends.objectstore.ObjectStoreBackend` over this interface; an adapter
(local disk, memory, S3, GCS, Azure) only translates these calls to its store.

Rules every adapter follows:

- Keys are ``/``-separated strings relative to the adapter's root, made of the characters
  ``[A-Za-z0-9._~/-]`` only (the backend encodes everything else), each segment at most 255 bytes.
- ``version`` is an opaque token that changes whenever the bytes change. Stores whose version is
  content-derived (S3 ETags are MD5 digests) may return the same version for identical bytes; the
  backend defends against that ABA hazard by writing a fresh nonce into every object.
- A conditional write either happens entirely or not at all; it never degrades to an overwrite.
  An adapter that cannot guarantee this for a store must refuse it with
  :class:`~objstore_wfp.errors.UnsupportedStoreError`.
- Failures other than "condition false" / "not found" are retried inside the adapter where safe and
  surface as :class:`~objstore_wfp.errors.StoreUnavailableError` with the cause attached. No
  store client exception escapes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class StoredObject:
    """The bytes of one object and the version they were read at."""

    data: bytes
    version: str
    #: Seconds this version had existed when the store answered, on the store's own clock and
    #: never more than the truth (see :func:`server_age`); ``None`` where the store reports no
    #: write time and server time (local disk, memory, obstore).
    age: float | None = None


def server_age(written: datetime | str | None, answered: str | None) -> float | None:
    """The age :attr:`StoredObject.age` wants, from a response's write time (``Last-Modified``
    as a datetime or an HTTP date) and its ``Date`` header (an HTTP date). Stores give both to
    the second (S3 and Azure keep no finer write time), truncated: the true age is more than
    ``Date - written - 1 s``, which is returned (at least 0). ``None`` when either is missing or
    unparsable: the backend then times the version on its own clock."""
    try:
        if isinstance(written, str):
            written = parsedate_to_datetime(written)
        now = parsedate_to_datetime(answered) if answered else None
    except (TypeError, ValueError):
        return None
    if written is None or now is None or written.tzinfo is None or now.tzinfo is None:
        return None
    return max(0.0, (now - written).total_seconds() - 1.0)


@dataclass(frozen=True)
class ListedObject:
    """One key found by :meth:`ConditionalStore.list`."""

    key: str
    version: str | None


class ConditionalStore(ABC):
    """Get with version, put if absent, put if version, delete (if version), list by prefix."""

    #: False where the store cannot delete conditionally (LocalStack): the backend then deletes
    #: unconditionally. No guarantee rests on conditional delete; it only narrows the race
    #: between a save and a ``delete_snapshot`` of the same instance.
    supports_conditional_delete: bool = True

    @property
    @abstractmethod
    def url(self) -> str:
        """Where the store points, for messages (credentials never appear)."""

    @abstractmethod
    async def get(self, key: str) -> StoredObject | None:
        """The object's bytes and version, or ``None`` if it does not exist."""

    @abstractmethod
    async def put(self, key: str, data: bytes) -> str:
        """Create or overwrite unconditionally; return the new version."""

    @abstractmethod
    async def put_if_absent(self, key: str, data: bytes) -> str | None:
        """Create the object only if no object exists at ``key``; return the new version, or
        ``None`` if it already existed (nothing written)."""

    @abstractmethod
    async def put_if_version(self, key: str, data: bytes, version: str) -> str | None:
        """Replace the object only if its current version is ``version``; return the new
        version, or ``None`` if the object changed or vanished (nothing written)."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Delete unconditionally; deleting a missing object is not an error."""

    @abstractmethod
    async def delete_if_version(self, key: str, version: str) -> bool:
        """Delete only if the current version is ``version``; ``False`` if it changed or vanished.
        Adapters with ``supports_conditional_delete = False`` raise ``UnsupportedStoreError``."""

    @abstractmethod
    def list(self, prefix: str, *, start_after: str | None = None) -> AsyncIterator[ListedObject]:
        """Every key starting with ``prefix``, in ascending byte order, lazily and page by page
        (a consumer that stops early does not pay for later pages). ``start_after`` skips keys
        up to and including it."""

    async def discard_debris(self, older_than: float) -> int:
        """Remove what interrupted writes left outside the key space (temporary files) and that
        is older than ``older_than`` seconds; return how many. Object stores write atomically
        and leave none: the default does nothing."""
        return 0

    async def close(self) -> None:
        """Release connections. The default does nothing."""
