"""An HTTP proxy in front of a real test server that injects faults on chosen requests.

Store adapters must survive throttling, 5xx answers and lost responses, and must not mistake their
own applied-but-unacknowledged conditional write for a competitor's. A proxy makes those cases
exact and repeatable: ``reject`` answers with an error status *without* forwarding (the server never
saw the request), ``lose_response`` forwards the request (the server applies it) and then answers
with an error status instead of the real answer, ``drop`` forwards it and then cuts the connection.

The proxy runs its own event loop in a thread, so tests with their own loops can use it freely.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import aiohttp
from aiohttp import web

from objstore_wfp.errors import BackendError
from objstore_wfp.stores.base import ConditionalStore

Mode = Literal["reject", "lose_response", "drop"]
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade"}


@dataclass
class Fault:
    """One injected fault: matches ``method`` and a path/query substring, fires ``times`` times."""

    method: str
    contains: str
    mode: Mode
    status: int
    times: int
    fired: int = 0


@dataclass(frozen=True)
class Seen:
    """A request the proxy received, and what it did with it."""

    method: str
    path_qs: str
    fault: Mode | None


class FaultProxy:
    """Forwards everything to ``upstream`` except what a registered :class:`Fault` matches."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.seen: list[Seen] = []
        #: Optional hook: given (method, path_qs), return a status to answer without forwarding.
        self.gate: Callable[[str, str], int | None] | None = None
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")

    @property
    def url(self) -> str:
        """The proxy's base URL (``http://127.0.0.1:PORT``)."""
        return f"http://127.0.0.1:{self.port}"

    def inject(self, method: str, contains: str, mode: Mode, *, status: int = 503, times: int = 1) -> Fault:
        """Make the next ``times`` requests matching ``method`` and ``contains`` fail."""
        fault = Fault(method.upper(), contains, mode, status, times)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Forget every fault and every recorded request."""
        with self._lock:
            self._faults.clear()
            self.seen.clear()

    def _match(self, method: str, path_qs: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.fired < fault.times and fault.method == method and fault.contains in path_qs:
                    fault.fired += 1
                    return fault
        return None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path_qs = request.raw_path
        body = await request.read()
        fault = self._match(request.method, path_qs)
        with self._lock:
            self.seen.append(Seen(request.method, path_qs, fault.mode if fault else None))
        if fault is not None and fault.mode == "reject":
            return web.Response(status=fault.status, text="injected fault")
        if self.gate is not None:
            status = self.gate(request.method, path_qs)
            if status is not None:
                return web.Response(status=status, text="refused by the proxy's gate")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        assert self._session is not None
        async with self._session.request(
            request.method,
            self.upstream + path_qs,
            headers=headers,
            data=body,
            skip_auto_headers=("Content-Type", "User-Agent", "Accept-Encoding"),
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            status = upstream.status
            response_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
        if fault is not None and fault.mode == "lose_response":
            return web.Response(status=fault.status, text="injected fault after forwarding")
        if fault is not None and fault.mode == "drop":
            transport = request.transport
            if transport is not None:
                transport.abort()
            raise asyncio.CancelledError
        return web.Response(status=status, headers=response_headers, body=payload)

    def close(self) -> None:
        """Stop the proxy and its thread."""

        async def stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            if self._session is not None:
                await self._session.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@contextmanager
def fault_proxy(upstream: str) -> Iterator[FaultProxy]:
    """A :class:`FaultProxy` for the duration of a ``with`` block."""
    proxy = FaultProxy(upstream)
    try:
        yield proxy
    finally:
        proxy.close()


async def call_every_operation(store: ConditionalStore, version: str) -> None:
    """Call each store operation once (``version`` is that of key ``k``); a result or a
    ``BackendError`` is fine, anything else escapes and fails the calling test."""

    async def listing() -> None:
        async for _ in store.list(""):
            pass

    operations = [
        store.get("k"),
        store.put("k", b"y"),
        store.put_if_absent("n", b"y"),
        store.put_if_version("k", b"y", version),
        store.delete("k"),
        store.delete_if_version("k", version),
        listing(),
    ]
    for operation in operations:
        with contextlib.suppress(BackendError):
            await operation
