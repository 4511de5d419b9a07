"""One resource per event loop, for store clients that are bound to the loop that made them.

aiohttp sessions, aiobotocore clients, the Azure SDK's transports and the ``asyncio.Lock`` inside
s3fs all belong to the event loop that created them: used from another loop they fail ("bound to
a different event loop"), and left open when their loop ends they leak a socket and log
"Unclosed client session". A store shared by several loops (one ``asyncio.run`` per serverless
invocation, one loop per thread in a web app) therefore keeps one resource per loop:

- :meth:`PerLoop.get` makes the running loop's resource on first use there (concurrent first
  uses in one loop share one making) and returns it afterwards;
- when a loop closes (``asyncio.run``, ``asyncio.Runner``, ``loop.close()``), the resources of
  every ``PerLoop`` used in it are closed on that loop, just before it closes (through
  ``asyncio-atexit``, which wraps the loop's ``close``);
- :meth:`PerLoop.aclose` closes every resource at once: the running loop's directly, those of
  other running loops on their own loop; an idle loop's resource is closed when that loop closes.

Loops are held weakly: nothing here keeps a loop alive. A loop that is dropped without being
closed cannot run its hooks, and its resources are then left to the garbage collector.

After ``fork()`` the child starts with no resources: the parent's are kept, untouched, for the
life of the child. Their sockets and the loop's selector are shared with the parent, so closing
them there (or letting the garbage collector do it) would unregister the parent's sockets from
its own ``epoll`` and could write on its connections.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

import asyncio_atexit

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds :meth:`PerLoop.aclose` waits for another running loop to close its resource; after
#: that the resource is left to that loop's own close.
CROSS_LOOP_CLOSE_TIMEOUT = 10.0

# Every PerLoop used in a loop, so that one hook per loop closes them all when it closes.
_users: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, weakref.WeakSet[PerLoop[Any]]] = (
    weakref.WeakKeyDictionary()
)
_users_lock = threading.Lock()


# Every PerLoop of this process, to be emptied in a forked child; and, in a child, what they
# held in the parent (see the module docstring).
_all: weakref.WeakSet[PerLoop[Any]] = weakref.WeakSet()
_inherited: list[object] = []


def _after_fork_in_child() -> None:
    global _users_lock
    _users_lock = threading.Lock()  # a thread of the parent may have held it
    _inherited.append(dict(_users))
    _users.clear()
    for user in list(_all):
        user._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _watch(loop: asyncio.AbstractEventLoop, user: PerLoop[Any]) -> None:
    with _users_lock:
        users = _users.get(loop)
        if users is None:
            users = _users[loop] = weakref.WeakSet()
            asyncio_atexit.register(_loop_closing, loop=loop)
        users.add(user)


async def _loop_closing() -> None:
    loop = asyncio.get_running_loop()
    with _users_lock:
        users = list(_users.pop(loop, ()))
    for user in users:
        await user._close_on(loop)


class PerLoop(Generic[T]):
    """A resource per event loop: ``await make()`` creates one on first use in a loop,
    ``await close(resource)`` runs on that same loop when it closes or when :meth:`aclose` is
    called. ``what`` names the resource in log messages.

    Safe to share between threads: each loop only ever sees its own resource.
    """

    def __init__(
        self, make: Callable[[], Coroutine[Any, Any, T]], close: Callable[[T], Awaitable[None]], what: str
    ) -> None:
        self._make = make
        self._close = close
        self._what = what
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Future[T]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        _all.add(self)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        _inherited.append(dict(self._slots))
        self._slots = weakref.WeakKeyDictionary()

    async def get(self) -> T:
        """The running loop's resource, made now if this is the first use in this loop.
        Raises what ``make()`` raised (the next call tries again)."""
        loop = asyncio.get_running_loop()
        making = self._slots.get(loop)
        if making is None:
            # A task of its own, awaited through shield(): a caller that is cancelled does not
            # cancel the making that other callers in this loop wait for.
            making = loop.create_task(self._make())
            with self._lock:
                self._slots[loop] = making
            making.add_done_callback(functools.partial(self._forget_failure, loop))
            _watch(loop, self)
        if making.done():
            return making.result()
        return await asyncio.shield(making)

    def _forget_failure(self, loop: asyncio.AbstractEventLoop, making: asyncio.Future[T]) -> None:
        if making.cancelled() or making.exception() is not None:
            with self._lock:
                if self._slots.get(loop) is making:
                    del self._slots[loop]

    async def _close_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close ``loop``'s resource, if it has one; runs on ``loop``."""
        with self._lock:
            ready = self._slots.get(loop)
            if ready is not None:
                del self._slots[loop]
        if ready is None or not ready.done() or ready.cancelled() or ready.exception() is not None:
            return
        try:
            await self._close(ready.result())
        except Exception:
            log.warning("closing %s failed", self._what, exc_info=True)

    async def aclose(self) -> None:
        """Close every loop's resource (see the module docstring). The next :meth:`get` in any
        loop makes a new one."""
        here = asyncio.get_running_loop()
        with self._lock:
            loops = list(self._slots.keys())
        waits: list[asyncio.Future[None]] = []
        for loop in loops:
            if loop is here:
                waits.append(asyncio.ensure_future(self._close_on(loop)))
            elif loop.is_running():
                try:
                    future = asyncio.run_coroutine_threadsafe(self._close_on(loop), loop)
                except RuntimeError:  # closed meanwhile: its hook has run
                    continue
                waits.append(asyncio.wrap_future(future))
        if waits:
            _, late = await asyncio.wait(waits, timeout=CROSS_LOOP_CLOSE_TIMEOUT)
            if late:
                log.warning("%s: %d loop(s) did not close their resource in time", self._what, len(late))
