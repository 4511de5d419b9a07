"""Conditional object stores: the tiny interface the object-store backend is written over, and
one adapter per storage system."""

from objstore_wfp.stores.base import ConditionalStore, ListedObject, StoredObject

__all__ = ["ConditionalStore", "ListedObject", "StoredObject"]
