"""The key layout of the object-store backend: a public, versioned format (layout 2).

All keys are relative to the backend's root prefix::

    objstore-wfp.json                            marker: {"layout": 2}, written on first use
    snapshots/<I>.json                           one per instance: state, results, ready tasks,
                                                 fences, cancellation request, incarnation
    blobs/<I>/<inc>/<ms>.<nonce>.bin             inputs/outputs above the inline limit (raw bytes)
    claims/<I>/<T>.json                          the lease of one task; outlives release and
                                                 delete: it holds the fencing-token high-water mark
    ready/<p>/<due-us>.<kind><nonce>/<I>/<T>     ready index: hints of tasks a worker may pick up
    ready/0/<I>/<seq>                            inbox: a signal sent, not yet absorbed into the
                                                 snapshot (its only write; sorts before all work)

``<I>`` and ``<T>`` are encoded instance and task ids (:func:`encode_id`); ``<inc>`` is the
incarnation (16 hex digits, new each time the snapshot is created where none exists); ``<p>`` is
the priority (1..5); ``<due-us>`` is the 16-digit microsecond time from which the entry is due.
A LIST of ``ready/`` returns work in dispatch order: most urgent first, then oldest. ``<kind>``
is ``r`` for an entry a snapshot write made when the task became ready (its slot is recorded in
the snapshot), ``l`` for one a lease placed at its expiry (the task was claimed: check the claim).
A delayed step's entry is due at its wake time, a signal wait's at its timeout (none without one).

Inbox objects sit in the ready index's own LIST, ahead of every entry (``0`` sorts before the
priorities), so the poll that LISTs for work sees a signal at no extra request; ``<seq>`` is the
signal's 16-digit number, taken by create-if-absent, so two signals of an instance never share it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

#: Longest encoded id kept readable; longer ones are hashed (keys stay far below S3's 1,024
#: bytes and local file names below 255 bytes).
MAX_READABLE = 180
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-.")
_HASHED_PREFIX = "~~"

#: The layout this release reads and writes; the marker object names it.
LAYOUT_VERSION = 2
MARKER = "objstore-wfp.json"
SNAPSHOTS = "snapshots/"
BLOBS = "blobs/"
CLAIMS = "claims/"
READY = "ready/"
JSON_SUFFIX = ".json"
#: Entry kinds: made by a snapshot write when the task became ready, or placed by a lease.
FRESH = "r"
LEASED = "l"
#: The inbox: ``ready/0/`` sorts before the priorities 1..5.
INBOX = "ready/0/"
#: The due time of an entry whose lease never expires (a claim without TTL): year 2286.
NEVER_US = 9_999_999_999_999_999


def encode_id(value: str) -> str:
    """Encode a legal id as one key segment, reversibly unless it is long.

    Lowercase letters, digits, ``_``, ``-`` and inner dots stay as they are; every other UTF-8
    byte becomes ``~xx`` (lowercase hex). Uppercase letters are escaped too, so two ids that
    differ only in case never collide on a case-insensitive disk, and a leading or trailing dot
    is escaped, so no segment is ``.``/``..`` or hidden. Encodings longer than
    ``MAX_READABLE`` become ``~~`` and a digest; the full id is stored inside the object.

    >>> encode_id("order-7"), encode_id("Job/../x"), encode_id("..")
    ('order-7', '~4aob~2f..~2fx', '~2e~2e')
    >>> decode_id(encode_id("ünï cödé ~%"))
    'ünï cödé ~%'
    """
    out = []
    last = len(value) - 1
    for i, ch in enumerate(value):
        if ch in _PLAIN and not (ch == "." and i in (0, last)):
            out.append(ch)
        else:
            out.extend(f"~{b:02x}" for b in ch.encode("utf-8"))
    encoded = "".join(out)
    if len(encoded) > MAX_READABLE:
        return _HASHED_PREFIX + hashlib.blake2b(value.encode("utf-8"), digest_size=20).hexdigest()
    return encoded


_ESCAPE = re.compile(r"~([0-9a-f]{2})")


def decode_id(segment: str) -> str | None:
    """The id a segment encodes; ``None`` for a hashed (long) id, whose object holds the id.
    Raises ``ValueError`` for a segment this layout never produces."""
    if segment.startswith(_HASHED_PREFIX):
        return None
    if not segment or any(c not in _PLAIN and c != "~" for c in segment):
        raise ValueError(f"not an encoded id: {segment!r}")
    raw = bytearray()
    pos = 0
    for match in _ESCAPE.finditer(segment):
        raw += segment[pos : match.start()].encode("ascii")
        raw.append(int(match.group(1), 16))
        pos = match.end()
    tail = segment[pos:]
    if "~" in tail:
        raise ValueError(f"not an encoded id: {segment!r}")
    raw += tail.encode("ascii")
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"not an encoded id: {segment!r}") from None
    if encode_id(decoded) != segment:
        raise ValueError(f"not a canonical encoded id: {segment!r}")
    return decoded


def snapshot_key(instance: str) -> str:
    return f"{SNAPSHOTS}{instance}{JSON_SUFFIX}"


def claim_key(instance: str, task: str) -> str:
    return f"{CLAIMS}{instance}/{task}{JSON_SUFFIX}"


def blob_key(instance: str, incarnation: str, name: str) -> str:
    return f"{BLOBS}{instance}/{incarnation}/{name}.bin"


def blob_prefix(instance: str, incarnation: str | None = None) -> str:
    return f"{BLOBS}{instance}/" if incarnation is None else f"{BLOBS}{instance}/{incarnation}/"


def ready_slot(priority: int, due_us: int, kind: str, nonce: str) -> str:
    """The part of a ready entry's key that orders it: ``<p>/<due-us>.<kind><nonce>``."""
    return f"{priority}/{min(max(due_us, 0), NEVER_US):016d}.{kind}{nonce}"


def ready_key(slot: str, instance: str, task: str) -> str:
    return f"{READY}{slot}/{instance}/{task}"


def inbox_key(instance: str, seq: int) -> str:
    return f"{INBOX}{instance}/{seq:016d}"


def inbox_prefix(instance: str) -> str:
    return f"{INBOX}{instance}/"


_INBOX_RE = re.compile(r"^ready/0/([^/]+)/(\d{16})$")


def parse_inbox_key(key: str) -> tuple[str, int] | None:
    """The encoded instance and seq of an inbox key, or ``None`` for any other key."""
    m = _INBOX_RE.match(key)
    return None if m is None else (m.group(1), int(m.group(2)))


@dataclass(frozen=True)
class ReadyEntry:
    key: str
    slot: str
    instance: str  # encoded
    task: str  # encoded
    priority: int
    due_us: int
    kind: str

    @property
    def leased(self) -> bool:
        return self.kind == LEASED


_READY_RE = re.compile(r"^ready/([1-5])/(\d{16})\.([rl])([0-9a-f]+)/([^/]+)/([^/]+)$")


def parse_ready_key(key: str) -> ReadyEntry | None:
    """The parts of a ready entry key, or ``None`` for a key this layout never writes."""
    m = _READY_RE.match(key)
    if m is None:
        return None
    priority, us, kind, nonce, instance, task = m.groups()
    return ReadyEntry(key, f"{priority}/{us}.{kind}{nonce}", instance, task, int(priority), int(us), kind)


def slot_kind(slot: str) -> str:
    """``FRESH`` or ``LEASED`` for a slot made by :func:`ready_slot`."""
    return slot.rpartition(".")[2][:1]


def instance_from_snapshot_key(key: str) -> str | None:
    """The encoded instance of a ``snapshots/<I>.json`` key, or ``None`` for a foreign key."""
    if not key.startswith(SNAPSHOTS) or not key.endswith(JSON_SUFFIX):
        return None
    segment = key[len(SNAPSHOTS) : -len(JSON_SUFFIX)]
    return segment if segment and "/" not in segment else None
