"""How long a lease has run, on clocks that need no agreement between workers.

A lease lasts ``ttl`` seconds from when its holder sent the claim or renewal. Nobody reads
another worker's wall clock: how long the current version of a claim object has existed is
measured on clocks that tick at nearly the real rate, and each gives a lower bound:

- the store's clock: S3, GCS and Azure report when the version was written and the time of the
  response that read it (:attr:`~objstore_wfp.stores.base.StoredObject.age`);
- the writer's monotonic clock, when the reader shares it (same domain: one machine, one boot,
  which covers every reader of a local-disk or ``memory://`` store): the claim carries the
  writer's reading taken just before it sent the claim (``ClaimRecord.stamp``);
- the reader's own monotonic clock since it first saw that version (the AWS DynamoDB lock
  client's lease model), for versions neither of the others can time (a store that reports no
  write time, a claim written on another machine of a local store, or before a reboot).

The lease has run at least the largest of these, so a claim is expired once that reaches the
TTL, however the workers' wall clocks disagree or step. A short-lived (serverless) claimer takes
over at once when the store or the stamp says so; only the third bound needs waiting.

The holder, for its part, stops renewing and recording :func:`~objstore_wfp.clock.window`
seconds after it sent the claim or renewal, on its own monotonic clock. With every clock's
rate within ``DRIFT`` of the real one, that is before any reader can judge the lease expired
(see docs/semantics.md).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from objstore_wfp.backends.objectstore.documents import ClaimRecord, Stamp, parse_claim
from objstore_wfp.clock import Clock, window
from objstore_wfp.stores.base import ConditionalStore, StoredObject

#: Versions whose first sighting this backend remembers.
SEEN_SIZE = 4096


async def read_claim(store: ConditionalStore, key: str) -> tuple[StoredObject, ClaimRecord] | None:
    """The claim object at ``key`` as read (its age is in it) and parsed, or ``None``; raises
    ``SerializationError`` for bytes that are not a claim."""
    found = await store.get(key)
    return None if found is None else (found, parse_claim(found, key))


class Leases:
    """Times leases for one backend, on its clock's monotonic readings."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def stamp(self) -> Stamp:
        """A reading to put into a claim about to be sent."""
        return Stamp(self.clock.domain, self.clock.monotonic())

    def age(self, key: str, found: StoredObject, record: ClaimRecord) -> float:
        """Seconds the lease in ``found`` (parsed: ``record``) has run at least."""
        now = self.clock.monotonic()
        with self._lock:
            first = self._seen.setdefault((key, found.version), now)
            self._seen.move_to_end((key, found.version))
            while len(self._seen) > SEEN_SIZE:
                self._seen.popitem(last=False)
        ages = [now - first]
        if found.age is not None:
            ages.append(found.age)
        if record.stamp is not None and record.stamp.domain == self.clock.domain:
            ages.append(now - record.stamp.at)
        return max(ages)

    def remaining(self, key: str, found: StoredObject, record: ClaimRecord) -> float | None:
        """Seconds until others may take ``record`` over (``<= 0``: now; ``None``: never)."""
        if record.ttl is None:
            return None
        return record.ttl - self.age(key, found, record)

    def live(self, key: str, found: StoredObject, record: ClaimRecord) -> bool:
        """Whether ``record`` (read as ``found``) is held and not expired."""
        left = self.remaining(key, found, record)
        return record.holder is not None and (left is None or left > 0)

    def holds(self, record: ClaimRecord) -> bool:
        """Whether the holder that wrote ``record`` (this backend) may still act on it."""
        if record.holder is None:
            return False
        if record.ttl is None:
            return True
        if record.stamp is None or record.stamp.domain != self.clock.domain:
            return False
        return self.clock.monotonic() - record.stamp.at < window(record.ttl)
