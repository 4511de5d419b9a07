"""The object-store backend, split by concern (layout 2; see ``docs/object-store.md``):

- :mod:`.documents`: the stored documents, parsed and encoded without I/O;
- :mod:`.cas`: the one compare-and-swap loop every read-modify-write goes through;
- :mod:`.blobs`: values too large to inline; :mod:`.snapshots`: reading and caching snapshots;
- :mod:`.claims`: leases, fencing tokens and their publication; :mod:`.ready`: the ready index
  and polling; :mod:`.writes`: composing a whole snapshot document; :mod:`.repair`;
- :mod:`.backend`: ``ObjectStoreBackend``, the thin facade over them.
"""

from objstore_wfp.backends.objectstore.backend import INLINE_LIMIT, ObjectStoreBackend
from objstore_wfp.backends.objectstore.ready import STALE_GRACE
from objstore_wfp.backends.objectstore.repair import RepairReport

__all__ = ["INLINE_LIMIT", "STALE_GRACE", "ObjectStoreBackend", "RepairReport"]
