"""``python -m benchmarks.storecpu``: CPU time and instructions per local-disk store operation.

Figure 1 times whole backend operations against the raw floor in wall time; this one looks one
level down, at :class:`~objstore_wfp.stores.local.LocalStore` itself, and counts what a worker
pays in CPU: each operation runs ``n`` times in a row on 1 KiB objects (fresh keys where the
operation creates), and the figure is user+sys of the whole process (the store's threads
included) divided by ``n``. fsync's wait for the disk is not CPU time; the CPU it costs is.

``--callgrind`` counts instructions instead, under ``valgrind --tool=callgrind``: every
operation runs in a child process twice, with ``n`` and ``2n`` repetitions, and the difference
divided by ``n`` is the figure (start-up and imports cancel out). Instruction counts do not move
with the load of a shared machine, which CPU times do.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from objstore_wfp.stores.local import LocalStore

DATA = bytes(range(256)) * 4
WRONG_VERSION = "0.0.0000000000000000"


def _key(i: int) -> str:
    return f"bench/{i % 16:x}/obj-{i}"


async def _setup(store: LocalStore, n: int) -> list[str]:
    versions = []
    for i in range(n):
        version = await store.put_if_absent(_key(i), DATA)
        assert version is not None
        versions.append(version)
    return versions


#: The operation on iteration ``i``, given the versions of the objects written first.
Op = Callable[[LocalStore, int, list[str]], Awaitable[object]]
#: Name -> (whether the objects must exist first, the operation).
OPS: dict[str, tuple[bool, Op]] = {
    "get": (True, lambda s, i, v: s.get(_key(i))),
    "put_if_absent (new)": (False, lambda s, i, v: s.put_if_absent(_key(i), DATA)),
    "put_if_absent (exists)": (True, lambda s, i, v: s.put_if_absent(_key(i), DATA)),
    "put_if_version (matches)": (True, lambda s, i, v: s.put_if_version(_key(i), DATA, v[i])),
    "put_if_version (stale)": (True, lambda s, i, v: s.put_if_version(_key(i), DATA, WRONG_VERSION)),
    "put": (True, lambda s, i, v: s.put(_key(i), DATA)),
    "delete": (True, lambda s, i, v: s.delete(_key(i))),
    "delete (missing)": (False, lambda s, i, v: s.delete(_key(i))),
    "delete_if_version (matches)": (True, lambda s, i, v: s.delete_if_version(_key(i), v[i])),
    "list (16 keys)": (True, lambda s, i, v: _drain(s, f"bench/{i % 16:x}/")),
}


async def _drain(store: LocalStore, prefix: str) -> int:
    return len([item async for item in store.list(prefix)])


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(name: str, n: int, objects: int | None = None) -> float:
    """CPU seconds per operation ``name`` over ``n`` runs, on a fresh store holding ``objects``
    objects (default ``n``) if the operation needs them."""
    root = Path(tempfile.mkdtemp(prefix="objstore-wfp-bench-storecpu-"))
    try:
        store = LocalStore(root)
        needs_objects, op = OPS[name]
        versions = await _setup(store, objects or n) if needs_objects else []
        started = _cpu()
        for i in range(n):
            await op(store, i, versions)
        return (_cpu() - started) / n
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _instructions(name: str, n: int, objects: int) -> int:
    """Instructions of a child process that writes ``objects`` objects (if ``name`` needs them)
    and runs ``name`` ``n`` times."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        command = ["valgrind", "-q", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable]
        command += ["-m", "benchmarks.storecpu", "--only", name, "-n", str(n), "--child", str(objects)]
        subprocess.run(command, check=True, capture_output=True)
        for line in out.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in callgrind's output for {name!r}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.storecpu", description=__doc__)
    parser.add_argument("-n", type=int, default=500, help="operations per figure")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (the median is shown)")
    parser.add_argument("--only", action="append", choices=sorted(OPS), help="some operations only")
    parser.add_argument("--callgrind", action="store_true", help="instructions per operation")
    parser.add_argument("--child", type=int, metavar="OBJECTS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = args.only or list(OPS)
    if args.child is not None:
        asyncio.run(measure(names[0], args.n, args.child))
        return
    if args.callgrind and shutil.which("valgrind") is None:
        parser.error("valgrind not found: apt-get install valgrind")
    for name in names:
        if args.callgrind:
            # The same set-up in both runs, so that only the extra n operations differ.
            small, large = (_instructions(name, k * args.n, 2 * args.n) for k in (1, 2))
            print(f"{name:30} {(large - small) / args.n / 1e3:8.1f} k instructions/op", flush=True)
        else:
            runs = sorted(asyncio.run(measure(name, args.n)) for _ in range(args.reps))
            print(
                f"{name:30} {runs[len(runs) // 2] * 1e6:8.1f} us CPU/op  (runs: "
                + ", ".join(f"{r * 1e6:.0f}" for r in runs)
                + ")",
                flush=True,
            )


if __name__ == "__main__":
    main()
