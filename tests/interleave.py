"""Forcing interleavings between store requests: a delegating store that can hold its caller.

:class:`InterleavingStore` wraps any :class:`~objstore_wfp.stores.base.ConditionalStore` and
forwards every call to it: the methods of the interface, whatever they are when this module is
imported (so a change to the interface does not break the wrapper), and any other attribute of
the wrapped adapter. A test arms a :class:`Stop` before (or after) the k-th request, or the k-th
request matching a predicate on ``(operation, key)``; when the caller gets there it is held
until the test resumes it. Meanwhile the test runs an interfering operation through another
backend over the same store.

:func:`interleave` does one such run; :func:`at_every_boundary` repeats it for k = 0, 1, ...
until the operation finishes before its k-th request, which makes a sweep that does not depend
on which requests the operation makes, only on the invariant the test checks after each run::

    async def attempt(k: int) -> bool:
        scene = await Scene.create(target.child(f"k{k}"))   # a fresh root per boundary
        outcome = await interleave(scene.store, scene.a.delete_snapshot("x"), scene.recreate, at=k)
        ...  # check the invariant, naming outcome.where in the message
        return outcome.stopped is not None

    await at_every_boundary(attempt)

A "request" is one awaited call (``get``, ``put``, ...) or one iteration of ``list``; ``close``
is not counted. Stops work across threads and event loops (a CLI command run in a thread).
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import inspect
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from objstore_wfp.stores.base import ConditionalStore

#: A predicate on ``(operation, key)``: the store method's name and its key or prefix argument.
Match = Callable[[str, str], bool]
T = TypeVar("T")

#: Calls that are not requests to the store.
NOT_REQUESTS = frozenset({"close"})
#: How long a caller may take to reach a stop or to finish once resumed (seconds).
TIMEOUT = 60.0


@dataclass(eq=False)
class Stop:
    """Holds the caller at the ``index``-th (0-based) request matching ``match`` counted from
    when the stop was armed: before the request is sent, or after its answer when ``after``."""

    index: int
    match: Match | None = None
    after: bool = False
    #: Set to ``(operation, key)`` of the request the caller is held at.
    reached: concurrent.futures.Future[tuple[str, str]] = field(default_factory=concurrent.futures.Future)
    _resumed: concurrent.futures.Future[None] = field(default_factory=concurrent.futures.Future)
    _seen: int = 0

    async def wait(self, timeout: float = TIMEOUT) -> tuple[str, str]:
        """Wait until the caller is held; return the request's ``(operation, key)``.
        Raises ``TimeoutError`` if it does not get there within ``timeout`` seconds."""
        return await asyncio.wait_for(asyncio.wrap_future(self.reached), timeout)

    def resume(self) -> None:
        """Let the held caller go on (idempotent; harmless if it was never held)."""
        if not self._resumed.done():
            self._resumed.set_result(None)

    def _counts(self, operation: str, key: str) -> bool:
        if self.reached.done() or (self.match is not None and not self.match(operation, key)):
            return False
        self._seen += 1
        return self._seen == self.index + 1


def _key_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    if args and isinstance(args[0], str):
        return args[0]
    for name in ("key", "prefix"):
        if isinstance(kwargs.get(name), str):
            return str(kwargs[name])
    return ""


def _forwarder(name: str) -> Callable[..., Any]:
    def forward(self: InterleavingStore, *args: Any, **kwargs: Any) -> Any:
        return self._forward(name, getattr(self.inner, name), args, kwargs)

    forward.__name__ = forward.__qualname__ = name
    return forward


class InterleavingStore(ConditionalStore):
    """Forwards everything to ``inner``; holds the caller at armed :class:`Stop` points.

    ``requests`` logs ``(operation, key)`` of every request, in the order they were sent.
    """

    # The interface's methods as mypy sees them; the loop after the class adds any others.
    get = _forwarder("get")
    put = _forwarder("put")
    put_if_absent = _forwarder("put_if_absent")
    put_if_version = _forwarder("put_if_version")
    delete = _forwarder("delete")
    delete_if_version = _forwarder("delete_if_version")
    list = _forwarder("list")
    discard_debris = _forwarder("discard_debris")
    close = _forwarder("close")

    def __init__(self, inner: ConditionalStore) -> None:
        self.inner = inner
        self.requests: list[tuple[str, str]] = []
        self._stops: list[Stop] = []
        self._lock = threading.Lock()

    def rewrap(self, inner: ConditionalStore) -> InterleavingStore:
        """A wrapper around ``inner`` that shares this one's stops and request log: for code
        that opens its own connection to the same store (a CLI command in another thread)."""
        twin = InterleavingStore(inner)
        twin.requests, twin._stops, twin._lock = self.requests, self._stops, self._lock
        return twin

    def __getattr__(self, name: str) -> Any:
        # Only reached for names this class does not define: adapter-specific attributes.
        if name == "inner":
            raise AttributeError(name)
        value = getattr(self.inner, name)
        if not callable(value) or name.startswith("_"):
            return value
        return lambda *args, **kwargs: self._forward(name, value, args, kwargs)

    @property
    def url(self) -> str:
        return self.inner.url

    @property
    def supports_conditional_delete(self) -> bool:
        # Live, not copied: an adapter may learn only from its first refused delete.
        return self.inner.supports_conditional_delete

    @supports_conditional_delete.setter
    def supports_conditional_delete(self, value: bool) -> None:
        self.inner.supports_conditional_delete = value

    def stop(self, index: int, *, match: Match | None = None, after: bool = False) -> Stop:
        """Arm a stop at the ``index``-th request (0-based) from now that satisfies ``match``."""
        if index < 0:
            raise ValueError(f"index must be >= 0, got {index}")
        armed = Stop(index, match, after)
        with self._lock:
            self._stops.append(armed)
        return armed

    def _triggered(self, operation: str, key: str, after: bool) -> Stop | None:
        with self._lock:
            if not after:
                self.requests.append((operation, key))
            for armed in self._stops:
                if armed.after == after and armed._counts(operation, key):
                    self._stops.remove(armed)
                    return armed
        return None

    async def _checkpoint(self, operation: str, key: str, *, after: bool) -> None:
        if operation in NOT_REQUESTS:
            return
        armed = self._triggered(operation, key, after)
        if armed is not None:
            armed.reached.set_result((operation, key))
            await asyncio.wrap_future(armed._resumed)

    def _forward(self, operation: str, method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        result = method(*args, **kwargs)
        key = _key_of(args, kwargs)
        if inspect.isawaitable(result):
            return self._held_call(operation, key, result)
        if hasattr(result, "__aiter__"):
            return self._held_iteration(operation, key, result)
        return result

    async def _held_call(self, operation: str, key: str, call: Awaitable[Any]) -> Any:
        try:
            await self._checkpoint(operation, key, after=False)
        except BaseException:
            if inspect.iscoroutine(call):
                call.close()  # never sent: do not leave an un-awaited coroutine behind
            raise
        result = await call
        await self._checkpoint(operation, key, after=True)
        return result

    async def _held_iteration(
        self, operation: str, key: str, items: AsyncIterator[Any]
    ) -> AsyncIterator[Any]:
        await self._checkpoint(operation, key, after=False)
        async for item in items:
            yield item
        await self._checkpoint(operation, key, after=True)


# Every method the interface has when this module is imported goes through ``_forward``: one added
# to the interface later is forwarded (and counted) without a change here.
for _name, _member in inspect.getmembers(ConditionalStore, inspect.isfunction):
    if not _name.startswith("_") and _name not in vars(InterleavingStore):
        setattr(InterleavingStore, _name, _forwarder(_name))
abc.update_abstractmethods(InterleavingStore)


@dataclass
class Outcome:
    """How an operation run by :func:`interleave` ended."""

    value: Any = None
    error: BaseException | None = None
    #: ``(operation, key)`` of the request it was held at, or ``None`` if it finished first
    #: (the interference then ran after it).
    stopped: tuple[str, str] | None = None
    #: The interfering operation's own outcome.
    interference: Any = None
    #: The index of the request the operation was to be held at.
    at: int = 0

    @property
    def where(self) -> str:
        """Where the operation was held, for assertion messages."""
        if self.stopped is None:
            return "after the operation finished"
        operation, key = self.stopped
        return f"held at request {self.at} ({operation} {key!r})"

    def result(self) -> Any:
        """The value, or raise the error the operation raised."""
        if self.error is not None:
            raise self.error
        return self.value


async def interleave(
    store: InterleavingStore,
    operation: Coroutine[Any, Any, Any],
    interfere: Callable[[], Awaitable[T]],
    *,
    at: int,
    match: Match | None = None,
    after: bool = False,
    timeout: float = TIMEOUT,
) -> Outcome:
    """Run ``operation`` (whose requests go through ``store``), hold it at the ``at``-th
    request matching ``match`` (before it, or after it with ``after``), run ``interfere()`` to
    the end, resume the operation and wait for it. If the operation ends before that request,
    ``interfere()`` runs after it. Errors of ``operation`` are returned in the :class:`Outcome`;
    errors of ``interfere`` propagate."""
    armed = store.stop(at, match=match, after=after)
    running = asyncio.ensure_future(operation)
    reached = asyncio.ensure_future(armed.wait(timeout))
    try:
        await asyncio.wait({running, reached}, return_when=asyncio.FIRST_COMPLETED, timeout=timeout)
        stopped = reached.result() if reached.done() and not reached.cancelled() else None
        if stopped is None and not running.done():
            raise TimeoutError(f"the operation neither reached request {at} nor finished in {timeout} s")
        interference = await interfere()
    finally:
        reached.cancel()
        armed.resume()
        with store._lock:
            if armed in store._stops:
                store._stops.remove(armed)
    done, _ = await asyncio.wait({running}, timeout=timeout)
    if not done:
        running.cancel()
        raise TimeoutError(f"the operation did not finish within {timeout} s of being resumed")
    error = running.exception()
    return Outcome(None if error else running.result(), error, stopped, interference, at)


async def at_every_boundary(attempt: Callable[[int], Awaitable[bool]], *, most: int = 150) -> int:
    """Call ``attempt(k)`` for k = 0, 1, ... until it returns ``False`` (the operation finished
    before its k-th request: every boundary is covered); return how many boundaries were held.
    Raises ``AssertionError`` if the operation still had requests after ``most`` boundaries."""
    for k in range(most):
        if not await attempt(k):
            return k
    raise AssertionError(f"the operation made more than {most} requests: raise `most` or narrow `match`")


async def crash_when(
    store: InterleavingStore,
    operation: Coroutine[Any, Any, Any],
    condition: Callable[[], Awaitable[bool]],
    *,
    timeout: float = TIMEOUT,
) -> bool:
    """Run ``operation`` one request at a time; at the first boundary where ``condition()``
    holds, kill it there (cancel it while it is held, as a crash would stop it) and return
    ``True``. Returns ``False`` if it finished first (its error, if any, is raised)."""
    running = asyncio.ensure_future(operation)
    armed = store.stop(0)
    try:
        while True:
            reached = asyncio.ensure_future(armed.wait(timeout))
            await asyncio.wait({running, reached}, return_when=asyncio.FIRST_COMPLETED)
            if not reached.done():
                reached.cancel()
                running.result()
                return False
            if await condition():
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
                return True
            held, armed = armed, store.stop(0)  # armed before the held request goes on
            held.resume()
    finally:
        armed.resume()
        with store._lock:
            if armed in store._stops:
                store._stops.remove(armed)
