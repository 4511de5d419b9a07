"""Backends: the in-memory reference implementation and the object-store backend."""
