"""Fixtures of the LangGraph tests: the store roots of :mod:`tests.backends`."""

from tests.backends import local_store_target, memory_store_target

__all__ = ["local_store_target", "memory_store_target"]
