"""Local disk: one file per object, made crash-safe and atomic across processes.

- Every write goes to a temporary file in the object's own directory, is fsynced, and is then
  published atomically: ``os.link`` for create-if-absent (fails if the name exists, so there is
  no check-then-write), ``os.replace`` otherwise; the directory is fsynced afterwards. A process
  killed at any instant leaves the old bytes or the new bytes, never a torn file.
- Compare-and-swap, overwrites and deletes read, compare and write under an exclusive ``flock``
  on one of 4096 lock files under ``.locks/`` (chosen by hashing the key), so they are atomic
  across processes and threads: each holder opens the lock file afresh, and ``flock`` locks of
  distinct open files exclude each other even within one process. A bare ``flock`` costs a few
  microseconds of CPU where the ``filelock`` package cost about a hundred; it is the same lock
  (``filelock`` flocks the same files), so processes of older versions still exclude these.
  Create-if-absent does not need the lock: linking cannot overwrite, and a CAS or delete can only
  act on a file that exists.
- A lock held by another process is waited for at most ``LOCK_WAIT_SECONDS``, polled with the
  package's backoff; then the write fails with ``StoreUnavailableError`` naming the lock file. A
  holder stopped inside its critical section (SIGSTOP, Ctrl-Z, a paused container) keeps the
  lock until it resumes or dies: its lock cannot be broken safely, since on resuming it would
  finish the write it had checked (a lease it holds is not taken over meanwhile).
- A lock is never handed to a forked child: ``flock`` belongs to the open file, which ``fork()``
  shares with the child, so the child closes its copies of the lock files held at the fork.
- Writes wait for fsync (milliseconds), so they run in a thread; reads of small files and the
  outcomes decided by one ``stat`` (create-if-absent of a key that exists, delete of a key that
  does not) are answered on the event loop, where a thread hand-off would cost more CPU than the
  operation. Either answer is what the store held at an instant during the call.
- The version is ``<inode>.<mtime_ns>.<digest>``: a new write creates a new inode while the old
  one is still alive, so writing identical bytes twice still changes the version, and the digest
  makes a reused inode with the same timestamp harmless.

Names starting with ``.`` (temporary files, ``.locks``) are never listed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import itertools
import os
import secrets
import stat
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TypeVar

from objstore_wfp.backoff import CONTENTION
from objstore_wfp.errors import StoreUnavailableError
from objstore_wfp.stores.base import ConditionalStore, ListedObject, StoredObject

T = TypeVar("T")
_LOCK_BUCKETS_HEX = 3  # 16**3 = 4096 lock files at most
#: Objects up to this size are read on the event loop (see :meth:`LocalStore.get`).
_INLINE_READ = 64 * 1024
#: Tries to create an object's directory while deletes keep pruning it empty.
_MKDIR_ATTEMPTS = 100
#: Keys :meth:`LocalStore.list` walks per thread hop: few at first, more for long listings.
_FIRST_BATCH, _MAX_BATCH = 16, 1024


#: The longest a write waits for its key's lock (seconds) before ``StoreUnavailableError``.
LOCK_WAIT_SECONDS = 10.0

# The lock files this process has open, and a guard held from each open to its registration
# here, from each unregistration to its close, and across fork(): a child never inherits one
# unregistered, so it can close them all (see _close_inherited_locks).
_lock_fds: set[int] = set()
_lock_fds_guard = threading.Lock()


def _close_inherited_locks() -> None:
    for fd in _lock_fds:
        os.close(fd)  # the parent keeps its own descriptor, and with it the lock
    _lock_fds.clear()
    _lock_fds_guard.release()  # taken before the fork by the thread that forked


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(
        before=_lock_fds_guard.acquire,
        after_in_parent=_lock_fds_guard.release,
        after_in_child=_close_inherited_locks,
    )


def _flock(fd: int, path: str) -> None:
    """Lock ``fd`` exclusively, waiting at most ``LOCK_WAIT_SECONDS``; raises
    ``StoreUnavailableError`` naming ``path`` when it is still held by then."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    failures = 0
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StoreUnavailableError(
                    f"{path}: still locked by another writer after {LOCK_WAIT_SECONDS} s (a process "
                    f"stopped while writing holds it until it resumes or exits; `fuser {path}` names it)"
                ) from exc
        failures += 1
        time.sleep(min(CONTENTION.delay(failures), left))


class _TooLarge(Exception):
    """The object is larger than the caller wants to read inline."""


def _version(st: os.stat_result, data: bytes) -> str:
    digest = hashlib.blake2b(data, digest_size=8).hexdigest()
    return f"{st.st_ino:x}.{st.st_mtime_ns:x}.{digest}"


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore(ConditionalStore):
    """Objects as files under ``root`` (created if missing)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = Path(root).expanduser().resolve()
        # Reads join strings: building a Path per read costs more than reading a small file.
        self._prefix = f"{self._root}{os.sep}"
        self._locks = f"{self._prefix}.locks{os.sep}"
        # Temporary names are this store's random tag and a counter: a random name per write
        # cost a getrandom call each. O_EXCL still refuses a name in use (a forked copy of this
        # store, say), and then the tag is drawn anew.
        self._tag = secrets.token_hex(4)
        self._count = itertools.count()
        try:
            (self._root / ".locks").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailableError(f"cannot use {self._root} as a store root: {exc}") from exc

    @property
    def url(self) -> str:
        return self._root.as_uri()

    @property
    def root(self) -> Path:
        return self._root

    # -- plumbing ------------------------------------------------------------------------------
    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        try:
            return await asyncio.to_thread(fn, *args)
        except OSError as exc:
            raise StoreUnavailableError(f"{self.url}: {exc}") from exc

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        """Hold the key's bucket lock (blocking for up to ``LOCK_WAIT_SECONDS``: call it in a
        thread). Raises ``StoreUnavailableError`` if it is still held by then."""
        bucket = hashlib.blake2b(key.encode(), digest_size=4).hexdigest()[:_LOCK_BUCKETS_HEX]
        path = f"{self._locks}{bucket}.lock"
        with _lock_fds_guard:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            _lock_fds.add(fd)
        try:
            _flock(fd, path)
            yield
        finally:
            with _lock_fds_guard:
                _lock_fds.discard(fd)
                os.close(fd)  # the only descriptor of this open file: closing it releases the lock

    def _is_file(self, key: str) -> bool:
        """Whether a regular file is at ``key`` now (a directory there is no object)."""
        try:
            return stat.S_ISREG(os.stat(self._prefix + key).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise StoreUnavailableError(f"{self.url}: {exc}") from exc

    def _read(self, key: str, limit: int | None = None) -> StoredObject | None:
        """Raises ``_TooLarge`` instead of reading a file larger than ``limit`` bytes."""
        try:
            fd = os.open(self._prefix + key, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None  # a directory where an object would be: no object
            if limit is not None and st.st_size > limit:
                raise _TooLarge
            # A published file never changes (writes replace it), so one read asking for a byte
            # more than its size returns all of it and shows the end: one system call, not two.
            data = os.read(fd, st.st_size + 1)
            if len(data) != st.st_size:  # a short read: read on to the end
                chunks = [data]
                while chunk := os.read(fd, 1 << 20):
                    chunks.append(chunk)
                data = b"".join(chunks)
            return StoredObject(data, _version(st, data))
        finally:
            os.close(fd)

    def _write_temp(self, path: str, data: bytes) -> tuple[str, str]:
        """Write ``data`` to a new fsynced temporary file beside ``path``; returns its path and
        the version it will have once published."""
        directory, _, name = path.rpartition(os.sep)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        for attempt in range(_MKDIR_ATTEMPTS):
            temp = f"{directory}{os.sep}.{name}.{self._tag}{next(self._count):x}.tmp"
            try:
                fd = os.open(temp, flags, 0o644)
                break
            except FileExistsError:
                self._tag = secrets.token_hex(4)
            except FileNotFoundError:
                # The directory is new, or a delete pruned it (then empty) meanwhile: make it.
                if attempt == _MKDIR_ATTEMPTS - 1:
                    raise
                with contextlib.suppress(FileNotFoundError):  # pruned again while made
                    os.makedirs(directory, exist_ok=True)
        else:
            raise FileExistsError(errno.EEXIST, "no free temporary name", temp)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            version = _version(os.fstat(fd), data)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        os.close(fd)
        return temp, version

    def _replace(self, key: str, data: bytes) -> str:
        path = self._prefix + key
        temp, version = self._write_temp(path, data)
        os.replace(temp, path)
        _fsync_dir(os.path.dirname(path))
        return version

    # -- interface -----------------------------------------------------------------------------
    async def get(self, key: str) -> StoredObject | None:
        # A small object is read on the event loop: from the page cache that takes ~20 us,
        # while handing it to a thread costs ~150 us (measured by the benchmarks), most of a
        # load. Larger objects, and every write (fsync takes milliseconds), go to a thread.
        try:
            return self._read(key, _INLINE_READ)
        except _TooLarge:
            return await self._run(self._read, key)
        except OSError as exc:
            raise StoreUnavailableError(f"{self.url}: {exc}") from exc

    async def put(self, key: str, data: bytes) -> str:
        def work() -> str:
            with self._lock(key):
                return self._replace(key, data)

        return await self._run(work)

    async def put_if_absent(self, key: str, data: bytes) -> str | None:
        if self._is_file(key):
            return None  # a lost race for a claim: no temporary file, no fsync, no thread

        def work() -> str | None:
            path = self._prefix + key
            temp, version = self._write_temp(path, data)
            try:
                os.link(temp, path)
            except FileExistsError:
                if os.path.isdir(path):
                    # Not "the object exists" (a get reads it as missing): no retry can succeed.
                    raise IsADirectoryError(
                        errno.EISDIR, "a directory is where an object belongs", path
                    ) from None
                return None
            finally:
                os.unlink(temp)
            _fsync_dir(os.path.dirname(path))
            return version

        return await self._run(work)

    async def put_if_version(self, key: str, data: bytes, version: str) -> str | None:
        def work() -> str | None:
            with self._lock(key):
                current = self._read(key)
                if current is None or current.version != version:
                    return None
                return self._replace(key, data)

        return await self._run(work)

    async def delete(self, key: str) -> None:
        if not self._is_file(key):
            return

        def work() -> None:
            with self._lock(key):
                self._unlink(key)

        await self._run(work)

    async def delete_if_version(self, key: str, version: str) -> bool:
        def work() -> bool:
            with self._lock(key):
                current = self._read(key)
                if current is None or current.version != version:
                    return False
                self._unlink(key)
                return True

        return await self._run(work)

    def _unlink(self, key: str) -> None:
        path = self._prefix + key
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno not in (errno.EISDIR, errno.EPERM):
                raise
            return
        directory = os.path.dirname(path)
        try:
            _fsync_dir(directory)
        except FileNotFoundError:
            return  # another process pruned the emptied directory already
        self._prune(directory)

    def _prune(self, directory: str) -> None:
        """Remove ``directory`` and its parents while they are empty, up to the root. Without
        this every ready entry ever deleted leaves two empty directories that each listing of
        ``ready/`` walks again. A writer racing with this recreates the directory (see
        ``_write_temp``); a directory holding a file, even a temporary one, is never removed."""
        while directory.startswith(self._prefix):
            try:
                os.rmdir(directory)
            except OSError:  # not empty, or already gone: nothing more to prune
                return
            directory = os.path.dirname(directory)

    async def discard_debris(self, older_than: float) -> int:
        """Delete temporary files of writes killed midway (``.<name>.<random>.tmp``) once older
        than ``older_than`` seconds: younger ones may belong to a write in progress."""

        def work() -> int:
            cutoff = time.time() - older_than
            removed = 0
            for directory, dirs, files in os.walk(self._root):
                dirs[:] = [d for d in dirs if d != ".locks"]
                for name in files:
                    path = os.path.join(directory, name)
                    if name.startswith(".") and name.endswith(".tmp") and os.lstat(path).st_mtime < cutoff:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(path)
                            removed += 1
            return removed

        return await self._run(work)

    async def list(self, prefix: str, *, start_after: str | None = None) -> AsyncIterator[ListedObject]:
        # The walk is lazy and goes in growing batches: a consumer that stops after a few keys
        # (find_available_tasks) reads a few directories, not the whole tree. The first keys are
        # walked on the event loop, one at a time (a poll that wants 8 ready entries walks 8,
        # each two directories deep): the walk is mostly Python holding the GIL, so a thread
        # would not free the loop for its duration anyway, and the hand-off cost more CPU than a
        # small walk (benchmarks/storecpu.py). Longer listings go on in a thread.
        keys = _iter_keys(self._root, prefix)
        for _ in range(_FIRST_BATCH):
            try:
                key = next(keys, None)
            except OSError as exc:
                raise StoreUnavailableError(f"{self.url}: {exc}") from exc
            if key is None:
                return
            if start_after is None or key > start_after:
                yield ListedObject(key, None)
        batch = _FIRST_BATCH
        while True:
            batch = min(batch * 4, _MAX_BATCH)
            chunk = await self._run(_take, keys, batch)
            for key in chunk:
                if start_after is None or key > start_after:
                    yield ListedObject(key, None)
            if len(chunk) < batch:
                return


def _take(keys: Iterator[str], n: int) -> list[str]:
    return list(itertools.islice(keys, n))


def _iter_keys(root: Path, prefix: str) -> Iterator[str]:
    """Every file key under ``root`` that starts with ``prefix``, in byte order, lazily."""
    base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""

    def walk(directory: Path | str, rel: str) -> Iterator[str]:
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        # Sorting a directory's entries with "/" appended to subdirectories yields the keys
        # in the same byte order a flat object store lists them.
        named = sorted(
            (e.name + "/" if e.is_dir(follow_symlinks=False) else e.name, e)
            for e in entries
            if not e.name.startswith(".")
        )
        for name, entry in named:
            key = rel + name
            if name.endswith("/"):
                if key.startswith(prefix) or prefix.startswith(key):
                    yield from walk(entry.path, key)
            elif key.startswith(prefix) and entry.is_file(follow_symlinks=False):
                yield key

    return walk(root / base if base else root, base + "/" if base else "")
