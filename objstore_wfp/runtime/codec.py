"""How task inputs and outputs become the opaque bytes a backend stores."""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from objstore_wfp.errors import SerializationError


class Codec(Protocol):
    """Turns task values into bytes and back. ``encode`` must be deterministic (equal values give
    equal bytes): two workers that compute the same result must record the same output."""

    def encode(self, value: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


class JsonCodec:
    """JSON via orjson: ``None``, bools, numbers, strings, lists and dicts with string keys.

    >>> codec = JsonCodec()
    >>> codec.encode({"total": 3, "items": ["a"]})
    b'{"total":3,"items":["a"]}'
    >>> codec.decode(b'[1, 2]')
    [1, 2]
    """

    def encode(self, value: Any) -> bytes:
        try:
            return orjson.dumps(value)
        except TypeError as exc:
            raise SerializationError(f"task value is not JSON-serializable: {exc}") from None

    def decode(self, data: bytes) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise SerializationError(f"task value is not valid JSON: {exc}") from None
