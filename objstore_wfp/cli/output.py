"""Plain-text tables and JSON output for the CLI (no terminal library needed)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, TextIO

import orjson


def print_json(value: Any, out: TextIO | None = None) -> None:
    """Indented JSON; datetimes as ISO 8601, bytes refused (callers decode them first)."""
    (out or sys.stdout).write(json.dumps(value, indent=2, ensure_ascii=False, default=_default) + "\n")


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON-serializable: {type(value).__name__}")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO | None = None) -> None:
    """Left-aligned columns separated by two spaces; ``(none)`` for an empty table."""
    stream = out or sys.stdout
    if not rows:
        stream.write("(none)\n")
        return
    cells = [[str(c) for c in headers], *[[_cell(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        stream.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return format_time(value)
    return str(value)


def format_time(moment: datetime) -> str:
    """``2026-11-25 18:02:03`` in UTC."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def preview(data: bytes | None, width: int = 60) -> str:
    """A one-line view of stored bytes: compact JSON when they are JSON, else their size."""
    if data is None:
        return "-"
    try:
        text = orjson.dumps(orjson.loads(data)).decode()
    except orjson.JSONDecodeError:
        return f"<{len(data)} bytes>"
    return text if len(text) <= width else text[: width - 1] + "…"


def decoded(data: bytes | None) -> Any:
    """Stored bytes for ``--json``: the JSON value they hold, else ``{"base64": ...}``."""
    if data is None:
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        import base64

        return {"base64": base64.b64encode(data).decode("ascii")}
