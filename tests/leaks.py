"""Leak and noise detectors for the event-loop tests: warnings, error logs, unraisable
exceptions, open file descriptors, resident memory, traced allocations, open aiohttp sessions."""

from __future__ import annotations

import gc
import logging
import os
import sys
import tracemalloc
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp


class _Complaints(logging.Handler):
    """Collects every error-level log and every log that mentions "Unclosed"."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.ERROR or "unclosed" in message.lower():
            self.records.append(f"{record.name}: {message}")


@contextmanager
def no_complaints() -> Iterator[None]:
    """Fail if anything inside warns, logs an error or "Unclosed", or raises in a destructor."""
    handler = _Complaints()
    root = logging.getLogger()
    root.addHandler(handler)
    unraisable: list[str] = []
    previous_hook = sys.unraisablehook

    def hook(info: Any) -> None:
        unraisable.append(f"{info.exc_type.__name__}: {info.exc_value} in {info.object!r}")

    sys.unraisablehook = hook
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
            gc.collect()  # destructors of anything left behind run (and complain) now
    finally:
        sys.unraisablehook = previous_hook
        root.removeHandler(handler)
    complaints = [str(w.message) for w in caught] + handler.records + unraisable
    assert not complaints, f"{len(complaints)} complaints, first: {complaints[:3]}"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def open_sessions() -> int:
    """aiohttp sessions alive and not closed (every store client holds one)."""
    return sum(isinstance(o, aiohttp.ClientSession) and not o.closed for o in gc.get_objects())


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Usage:
    """Open file descriptors, resident bytes, and bytes tracemalloc sees allocated (0 when it
    is not tracing)."""

    fds: int
    rss: int
    traced: int

    @staticmethod
    def now() -> Usage:
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
        return Usage(open_fds(), rss(), traced)

    def growth_since(self, before: Usage) -> Usage:
        return Usage(self.fds - before.fds, self.rss - before.rss, self.traced - before.traced)

    def __str__(self) -> str:
        text = f"fds {self.fds:+d}, RSS {self.rss / 2**20:+.1f} MiB"
        return f"{text}, traced {self.traced / 2**20:+.2f} MiB" if self.traced else text
