"""A small HTTP/1.1 reverse proxy that injects the faults an S3 client meets in production.

It sits between the client and an S3 server (moto_server), runs its own event loop in a thread,
and, for a chosen fraction of requests (``rate``), injects one fault drawn from ``faults``:

- ``"500"``: 500 InternalError, request not forwarded;
- ``"503"``: 503 SlowDown, request not forwarded;
- ``"409"``: 409 ConditionalRequestConflict, request not forwarded (conditional requests only,
  as S3 sends it only for those; others draw another fault);
- ``"400"``: 400 RequestTimeout (S3's answer to a client that sent its body too slowly), request
  not forwarded; only by ``script``, never drawn;
- ``"drop_before"``: the connection is cut before the request is forwarded;
- ``"drop_after"``: the request IS forwarded and applied, then the connection is cut before the
  response (the client cannot know its write happened);
- ``"error_after"``: the request is forwarded and applied, then answered with 500;
- ``"slow"``: the request is forwarded, the response is held back ``slow_seconds``.

``script`` (a list of faults, ``None`` for "no fault") overrides the draw for the next requests,
in order: this makes one fault hit one known request. ``strip_conditions`` (HTTP methods) removes
``If-Match`` / ``If-None-Match`` before forwarding, which turns the server into one that silently
ignores preconditions, like s3rver.

Draws come from ``random.Random(seed)``; under concurrency the order of requests varies, so a seed
fixes the fault mix, not which request gets which fault. Every request is recorded in
:attr:`FaultProxy.records` (method, path, query, conditional headers, fault), which also makes it a
request counter.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

ALL_FAULTS = ("500", "503", "409", "drop_before", "drop_after", "error_after", "slow")

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "expect",
    "content-length",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
}
_ERROR_BODIES = {
    500: ("Internal Server Error", "InternalError", "We encountered an internal error. Please try again."),
    503: ("Slow Down", "SlowDown", "Please reduce your request rate."),
    400: (
        "Bad Request",
        "RequestTimeout",
        "Your socket connection to the server was not read from or written to within the timeout period.",
    ),
    409: (
        "Conflict",
        "ConditionalRequestConflict",
        "A conflicting conditional operation is currently in progress against this resource.",
    ),
}


@dataclass(frozen=True)
class Record:
    """One request the proxy received."""

    method: str
    path: str
    query: str
    #: The If-Match / If-None-Match headers sent, as ``name: value`` strings.
    conditions: tuple[str, ...]
    #: The fault injected, or ``None``.
    fault: str | None


class FaultProxy:
    """Reverse proxy to ``upstream`` (``http://host:port``) on 127.0.0.1 with fault injection."""

    def __init__(
        self,
        upstream: str,
        *,
        rate: float = 0.0,
        faults: Sequence[str] = ALL_FAULTS,
        seed: int = 0,
        slow_seconds: float = 0.3,
        strip_conditions: Sequence[str] = (),
    ) -> None:
        unknown = set(faults) - set(ALL_FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}")
        self.upstream = upstream.rstrip("/")
        self.rate = rate
        self.faults = tuple(faults)
        self.slow_seconds = slow_seconds
        self.strip_conditions = frozenset(strip_conditions)
        self.script: list[str | None] = []
        self.records: list[Record] = []
        self._random = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._session: aiohttp.ClientSession | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self.url = ""

    def start(self) -> str:
        """Start serving; return the proxy's URL."""
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def stop(self) -> None:
        """Stop serving and join the proxy's thread."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def injected(self) -> Counter[str]:
        """How many times each fault was injected."""
        return Counter(r.fault for r in self.records if r.fault is not None)

    async def _start(self) -> int:
        self._session = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=60))
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._connections):
            writer.transport.abort()
        handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def _draw(self, conditional: bool) -> str | None:
        if self.script:
            return self.script.pop(0)
        if self._random.random() >= self.rate:
            return None
        choices = [f for f in self.faults if conditional or f != "409"] or [None]
        return self._random.choice(choices)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, aiohttp.ClientError, ValueError):
            writer.transport.abort()
        except asyncio.CancelledError:
            # Cancelled by stop(): end quietly (Python 3.11 logs a handler that ends cancelled).
            writer.transport.abort()
        finally:
            self._connections.discard(writer)
            writer.close()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; ``False`` when the connection is finished."""
        line = await reader.readline()
        if not line.strip():
            return False
        method, target, _ = line.decode("latin-1").split(" ", 2)
        headers: list[tuple[str, str]] = []
        while True:
            raw = await reader.readline()
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers.append((name.strip(), value.strip()))
        lower = {name.lower(): value for name, value in headers}
        if lower.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        body = await _read_body(reader, lower)
        path, _, query = target.partition("?")
        conditions = tuple(f"{n}: {v}" for n, v in headers if n.lower() in ("if-match", "if-none-match"))
        fault = self._draw(bool(conditions))
        self.records.append(Record(method, path, query, conditions, fault))

        if fault in ("500", "503", "409", "400"):
            await _send_error(writer, int(fault or 0), path)
            return True
        if fault == "drop_before":
            writer.transport.abort()
            return False
        assert self._session is not None
        dropped = set(_HOP_BY_HOP)
        if method in self.strip_conditions:
            dropped |= {"if-match", "if-none-match"}
        forwarded = [(n, v) for n, v in headers if n.lower() not in dropped]
        async with self._session.request(
            method,
            self.upstream + target,
            headers=forwarded,
            data=body,
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
            allow_redirects=False,
        ) as response:
            payload = await response.read()
            status, reason = response.status, response.reason or ""
            upstream_headers = list(response.headers.items())
        if fault == "drop_after":
            writer.transport.abort()
            return False
        if fault == "error_after":
            await _send_error(writer, 500, path)
            return True
        if fault == "slow":
            await asyncio.sleep(self.slow_seconds)
        out = [(n, v) for n, v in upstream_headers if n.lower() not in _HOP_BY_HOP]
        if method == "HEAD":
            # No body on the wire, but the object's size is still announced.
            out += [(n, v) for n, v in upstream_headers if n.lower() == "content-length"]
        elif status not in (204, 304):
            out.append(("Content-Length", str(len(payload))))
        head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in out) + "\r\n"
        writer.write(head.encode("latin-1"))
        if method != "HEAD" and status not in (204, 304):
            writer.write(payload)
        await writer.drain()
        return lower.get("connection", "").lower() != "close"


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                # Trailers (if any) end with an empty line.
                while (await reader.readline()).strip():
                    pass
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = int(headers.get("content-length", "0") or 0)
    return await reader.readexactly(length) if length else b""


async def _send_error(writer: asyncio.StreamWriter, status: int, resource: str) -> None:
    reason, code, message = _ERROR_BODIES[status]
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{resource}</Resource><RequestId>faultproxy</RequestId></Error>"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode("latin-1") + body)
    await writer.drain()
