"""Identifier rules shared by every backend.

An id is a non-empty ``str`` of at most 512 UTF-8 bytes without control characters. Everything
else is legal, so backends that build storage keys from ids must encode them (see
:mod:`objstore_wfp.backends.layout`).
"""

from __future__ import annotations

import re

from objstore_wfp.errors import InvalidIdentifierError

MAX_ID_BYTES = 512
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def validate_id(value: object, what: str = "id") -> str:
    """Return ``value`` if it is a legal identifier, else raise :class:`InvalidIdentifierError`.

    >>> validate_id("orders/2026 ~ é", "instance_id")
    'orders/2026 ~ é'
    >>> validate_id("", "task_id")
    Traceback (most recent call last):
    ...
    objstore_wfp.errors.InvalidIdentifierError: task_id must not be empty
    """
    if not isinstance(value, str):
        raise InvalidIdentifierError(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        raise InvalidIdentifierError(f"{what} must not be empty")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidIdentifierError(f"{what} is not valid Unicode text: {exc.reason}") from None
    if size > MAX_ID_BYTES:
        raise InvalidIdentifierError(f"{what} is {size} UTF-8 bytes; at most {MAX_ID_BYTES} allowed")
    match = _CONTROL.search(value)
    if match:
        raise InvalidIdentifierError(
            f"{what} contains control character U+{ord(match.group()):04X} at index {match.start()}"
        )
    return value
