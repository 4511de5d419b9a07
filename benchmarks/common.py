"""Shared pieces of the benchmark suite: timing, rows of the result table, the machine.

Every figure is a median over ``reps`` repetitions, and every repetition times the backend and
its raw baseline back to back (alternating which goes first), so that the noise of a shared
machine hits both sides of a ratio alike.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

#: S3 Standard list prices (USD per request): PUT/COPY/POST/LIST, and GET. DELETE is free.
PRICE_WRITE = 0.005 / 1000
PRICE_GET = 0.0004 / 1000
#: Store operations (CountingStore) and S3 operations (counted on the wire), by price class.
_WRITES = ("put", "put_if_absent", "put_if_version", "list", "PutObject", "CopyObject", "ListObjectsV2")
_GETS = ("get", "GetObject", "HeadObject")
_FREE = ("delete", "delete_if_version", "DeleteObject", "DeleteObjects")


def dollars(counts: Mapping[str, float]) -> float:
    """What these requests (store operations or S3 operations) cost on S3 Standard."""
    total = 0.0
    for op, n in counts.items():
        if op in _WRITES:
            total += n * PRICE_WRITE
        elif op in _GETS:
            total += n * PRICE_GET
        elif op not in _FREE:
            raise ValueError(f"no price for store operation {op!r}")
    return total


@dataclass
class Row:
    """One line of the table: a figure, its baseline and how they compare."""

    section: str
    name: str
    value: str
    baseline: str = ""
    ratio: str = ""
    requests: str = ""
    note: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(f"  {row.section} | {row.name}: {row.value} {row.baseline} {row.ratio} {row.note}", flush=True)

    def table(self) -> str:
        head = ("#", "figure", "value", "baseline", "ratio", "requests/op", "note")
        lines = [(r.section, r.name, r.value, r.baseline, r.ratio, r.requests, r.note) for r in self.rows]
        widths = [
            max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(head)
        ]

        def fmt(cells: tuple[str, ...]) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

        out = [fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        out += [fmt(line) for line in lines]
        return "\n".join(out)


@contextlib.contextmanager
def running(procs: list[Any]) -> Iterator[None]:
    """Start ``multiprocessing`` processes; at exit kill and reap every one still alive, so that a
    failed or timed-out run leaves no worker behind."""
    try:
        for p in procs:
            p.start()
        yield
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    """The relative spread (max-min)/median of repeated runs, to show how noisy a figure was."""
    mid = statistics.median(values)
    return f"±{(max(values) - min(values)) / 2 / mid * 100:.0f}%" if mid else ""


async def timed(fn: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await fn()
    return time.perf_counter() - started


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}/s"


def machine() -> str:
    """Cores, CPU model, Python, disk and date, for RESULTS.md."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    disk = "unknown"
    try:
        target = Path(os.getcwd()).resolve()
        best = ""
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mount, fstype, *_ = line.split()
            if str(target).startswith(mount) and len(mount) > len(best):
                best, disk = mount, f"{dev} ({fstype}) on {mount}"
        name = Path(disk.split()[0]).name
        rotational = Path(f"/sys/block/{name}/queue/rotational")
        if rotational.exists():
            disk += ", rotational" if rotational.read_text().strip() == "1" else ", non-rotational"
    except (OSError, ValueError):
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} cores, {cpu}; Python {sys.version.split()[0]} on {platform.platform()}; "
        f"disk {disk}; load average at start {load}; "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    )
