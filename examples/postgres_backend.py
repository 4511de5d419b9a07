"""A ``PersistentBackend`` on PostgreSQL (psycopg 3 async): an example of a custom backend.

Every operation is one transaction. Writes to one instance serialize on its ``snapshots`` row
(``SELECT ... FOR UPDATE``), which makes compare-and-swap on the ``version`` column, first-wins
results and the ready index simple and atomic. Claims are one statement each:
``INSERT ... ON CONFLICT (instance_id, task_id) DO UPDATE ... WHERE`` the old claim was released
or has expired, which PostgreSQL evaluates under the row lock, so of N concurrent claimers
exactly one wins. A claim's expiry is judged by the server's ``clock_timestamp()`` since it was
written and, for a reader on the writer's monotonic clock (the same ``clock.domain``), by that
clock too: the larger age counts, so workers' wall clocks need not agree and a test moves time by
hand through a ``ManualClock``'s monotonic readings.

Schema (created by :meth:`PostgresBackend.create_schema`, all in one schema, default
``objstore_wfp``; ids are ``text COLLATE "C"`` so ``ORDER BY`` sorts them by code point, as
Python does)::

    versions               sequence: every save takes a new, never reused version
    snapshots              instance_id PK, doc (codec JSON without results, as text: JSON
                           escapes keep any str storable), version, state (in_progress |
                           completed | failed | cancelled), last_completed_task_id,
                           incarnation (drawn from ``versions`` by the save that created the
                           instance; overwrites and compare-and-swap saves keep it)
    task_results           (instance_id, task_id) PK, output bytea; append-only, first wins
    ready_tasks            (instance_id, task_id) PK, priority, ready_at: what
                           find_available_tasks reads, in index order
    task_claims            (instance_id, task_id) PK, holder (NULL once released), token
                           (fencing counter, kept on release), claimed_at, expires_at (the
                           writer's wall clock, for display), incarnation (the instance's
                           when claimed; NULL: none existed), started (the server's clock at
                           the last claim or renewal), ttl_us (NULL: no TTL), domain and
                           mono_us (the writer's monotonic clock then)
    cancellation_requests  instance_id PK, request (codec JSON)
    pause_requests         instance_id PK, request (codec JSON); gone once the state is final
    signals                (instance_id, seq) PK, name, payload bytea, sent_at: pending signals;
                           ``snapshots.signal_seq`` counts the instance's signals

A wait's step is in ``ready_tasks`` with ``ready_at`` its due time (a delay's wake time, a signal
wait's timeout, or the time its signal came), and ``find_available_tasks`` offers only rows due
by now, so a sleeping workflow costs a poll nothing. ``task_results``, ``ready_tasks``,
``cancellation_requests``, ``pause_requests`` and ``signals`` reference ``snapshots`` with
``ON DELETE CASCADE``. Claims do not: they may exist for unknown instances, and they outlive a
deleted instance as its tasks' token high-water marks (``delete_snapshot`` releases them), so
fencing tokens never repeat when the id is saved again. A claim whose incarnation is not the
instance's current one is dead: it blocks nothing and fences nothing. Every statement that
judges a claim reads the instance's incarnation under a row lock (``FOR SHARE``, or the
``FOR UPDATE`` of a write), so it cannot change before the transaction commits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from objstore_wfp import (
    AtDelay,
    AtSignal,
    AvailableTask,
    CancellationRequest,
    Cancelled,
    CannotCancelError,
    CannotPauseError,
    ClaimLostError,
    Clock,
    ConflictError,
    NotFoundError,
    PauseRequest,
    PersistentBackend,
    Signal,
    StoreUnavailableError,
    SystemClock,
    TaskClaim,
    TaskResult,
    WorkflowSnapshot,
)
from objstore_wfp.backends.validation import (
    check_claim,
    check_claim_for,
    check_duration,
    check_ids,
    check_limit,
    check_optional_task_id,
    check_output,
    check_payload,
    check_snapshot,
    check_text,
    expiry,
)
from objstore_wfp.ids import validate_id
from objstore_wfp.model.codec import (
    cancellation_from_json,
    cancellation_to_json,
    dumps,
    loads,
    open_envelope,
    pause_from_json,
    pause_to_json,
    snapshot_from_reader,
    snapshot_to_json,
)

_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE SEQUENCE IF NOT EXISTS {s}.versions;
CREATE TABLE IF NOT EXISTS {s}.snapshots (
    instance_id text COLLATE "C" PRIMARY KEY,
    doc text NOT NULL,
    version bigint NOT NULL,
    state text NOT NULL,
    last_completed_task_id text COLLATE "C",
    incarnation bigint
);
CREATE TABLE IF NOT EXISTS {s}.task_results (
    instance_id text COLLATE "C" REFERENCES {s}.snapshots ON DELETE CASCADE,
    task_id text COLLATE "C",
    output bytea NOT NULL,
    PRIMARY KEY (instance_id, task_id)
);
CREATE TABLE IF NOT EXISTS {s}.ready_tasks (
    instance_id text COLLATE "C" REFERENCES {s}.snapshots ON DELETE CASCADE,
    task_id text COLLATE "C",
    priority smallint NOT NULL,
    ready_at timestamptz NOT NULL,
    PRIMARY KEY (instance_id, task_id)
);
CREATE INDEX IF NOT EXISTS ready_tasks_order ON {s}.ready_tasks (priority, ready_at, instance_id, task_id);
CREATE TABLE IF NOT EXISTS {s}.task_claims (
    instance_id text COLLATE "C",
    task_id text COLLATE "C",
    holder text COLLATE "C",
    token bigint NOT NULL,
    claimed_at timestamptz NOT NULL,
    expires_at timestamptz,
    incarnation bigint,
    PRIMARY KEY (instance_id, task_id)
);
ALTER TABLE {s}.task_claims ADD COLUMN IF NOT EXISTS started timestamptz NOT NULL DEFAULT clock_timestamp(),
    ADD COLUMN IF NOT EXISTS ttl_us bigint, ADD COLUMN IF NOT EXISTS domain text,
    ADD COLUMN IF NOT EXISTS mono_us bigint;
CREATE TABLE IF NOT EXISTS {s}.cancellation_requests (
    instance_id text COLLATE "C" PRIMARY KEY REFERENCES {s}.snapshots ON DELETE CASCADE,
    request text NOT NULL
);
ALTER TABLE {s}.snapshots ADD COLUMN IF NOT EXISTS signal_seq bigint NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS {s}.pause_requests (
    instance_id text COLLATE "C" PRIMARY KEY REFERENCES {s}.snapshots ON DELETE CASCADE,
    request text NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.signals (
    instance_id text COLLATE "C" REFERENCES {s}.snapshots ON DELETE CASCADE,
    seq bigint,
    name text COLLATE "C" NOT NULL,
    payload bytea NOT NULL,
    sent_at timestamptz NOT NULL,
    PRIMARY KEY (instance_id, seq)
);
"""

# Whether claim ``c``'s lease has run out: its age reaches its TTL by the server's clock, or by
# the writer's monotonic clock when the reader shares it (parameters ``domain`` and ``mono``).
_EXPIRED = """(c.ttl_us IS NOT NULL AND GREATEST(
    (extract(epoch FROM clock_timestamp() - c.started) * 1000000)::bigint,
    CASE WHEN c.domain = %(domain)s THEN %(mono)s - c.mono_us END) >= c.ttl_us)"""

# Taking a claim: insert it, or take the row over if its holder released it, it expired, or it
# belongs to another incarnation than the current one (read under a share lock, so a concurrent
# delete or re-create waits for this statement's transaction).
_CLAIM = (
    """
WITH current AS (SELECT incarnation FROM {s}.snapshots WHERE instance_id = %(instance)s FOR SHARE)
INSERT INTO {s}.task_claims AS c (instance_id, task_id, holder, token, claimed_at, expires_at,
    incarnation, started, ttl_us, domain, mono_us)
VALUES (%(instance)s, %(task)s, %(worker)s, 1, %(now)s, %(expires)s, (SELECT incarnation FROM current),
        clock_timestamp(), %(ttl)s, %(domain)s, %(mono)s)
ON CONFLICT (instance_id, task_id) DO UPDATE
    SET holder = EXCLUDED.holder, token = c.token + 1, claimed_at = EXCLUDED.claimed_at,
        expires_at = EXCLUDED.expires_at, incarnation = EXCLUDED.incarnation, started = EXCLUDED.started,
        ttl_us = EXCLUDED.ttl_us, domain = EXCLUDED.domain, mono_us = EXCLUDED.mono_us
    WHERE c.holder IS NULL OR c.incarnation IS DISTINCT FROM EXCLUDED.incarnation OR """
    + _EXPIRED
    + """
RETURNING token
"""
)

# Ready tasks due by now in offer order, without live claims, pending cancellations or pauses, with the input
# (the last completed task's output, else the initial input kept in the document).
_FIND = (
    """
SELECT r.instance_id, r.task_id, r.priority, s.doc, last.output
FROM {s}.ready_tasks r
JOIN {s}.snapshots s ON s.instance_id = r.instance_id
LEFT JOIN {s}.task_results last
    ON last.instance_id = s.instance_id AND last.task_id = s.last_completed_task_id
LEFT JOIN {s}.task_claims c ON c.instance_id = r.instance_id AND c.task_id = r.task_id
WHERE r.ready_at <= %(now)s
  AND (c.holder IS NULL OR c.incarnation IS DISTINCT FROM s.incarnation OR """
    + _EXPIRED
    + """)
  AND NOT EXISTS (SELECT 1 FROM {s}.cancellation_requests x WHERE x.instance_id = r.instance_id)
  AND NOT EXISTS (SELECT 1 FROM {s}.pause_requests p WHERE p.instance_id = r.instance_id)
ORDER BY r.priority, r.ready_at, r.instance_id, r.task_id
LIMIT %(limit)s
"""
)

# One statement, so the document, its version and its results come from one consistent view.
_LOAD = """
SELECT s.doc, s.version,
    ARRAY(SELECT r.task_id FROM {s}.task_results r WHERE r.instance_id = s.instance_id ORDER BY r.task_id),
    ARRAY(SELECT r.output FROM {s}.task_results r WHERE r.instance_id = s.instance_id ORDER BY r.task_id)
FROM {s}.snapshots s WHERE s.instance_id = %s
"""


class PostgresBackend(PersistentBackend):
    """Workflow state in one PostgreSQL schema.

    Build it with :meth:`connect`, or pass an open ``AsyncConnectionPool`` and call
    :meth:`create_schema` once. :meth:`close` closes the pool. ``clock`` stamps ready times and
    claim times, and its monotonic readings time leases together with the server's clock
    (module docstring): workers' wall clocks need not agree.
    """

    def __init__(
        self, pool: AsyncConnectionPool, *, schema: str = "objstore_wfp", clock: Clock | None = None
    ) -> None:
        self._pool = pool
        self._schema_name = schema
        self._schema = sql.Identifier(schema)
        self._clock = clock or SystemClock()

    @classmethod
    async def connect(
        cls, conninfo: str, *, schema: str = "objstore_wfp", clock: Clock | None = None, max_size: int = 4
    ) -> PostgresBackend:
        """Open a pool of at most ``max_size`` connections and create the schema if needed."""
        pool = AsyncConnectionPool(conninfo, min_size=1, max_size=max_size, open=False)
        try:
            await pool.open(wait=True)
            backend = cls(pool, schema=schema, clock=clock)
            await backend.create_schema()
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, psycopg.Error):
                raise StoreUnavailableError(f"postgres: {exc}") from exc
            raise
        return backend

    async def create_schema(self) -> None:
        """Create the schema, sequence and tables unless they exist (safe to run concurrently)."""
        async with self._io() as conn, conn.transaction():
            # CREATE ... IF NOT EXISTS is not race-free; serialize concurrent creators.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"objstore-wfp {self._schema_name}",)
            )
            await conn.execute(self._sql(_SCHEMA))

    async def close(self) -> None:
        await self._pool.close()

    # -- plumbing --------------------------------------------------------------------------
    def _stamp(self) -> dict[str, Any]:
        """This backend's monotonic clock now, as the ``domain`` and ``mono`` parameters."""
        return {"domain": self._clock.domain, "mono": round(self._clock.monotonic() * 1_000_000)}

    def _sql(self, query: str) -> sql.Composed:
        return sql.SQL(query).format(s=self._schema)  # type: ignore[arg-type,unused-ignore]

    @asynccontextmanager
    async def _io(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection (committed on success); database errors become
        ``StoreUnavailableError``."""
        try:
            async with self._pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise StoreUnavailableError(f"postgres: {exc}") from exc

    async def _fetchone(self, conn: psycopg.AsyncConnection[Any], query: str, params: Any) -> Any:
        cursor = await conn.execute(self._sql(query), params)
        return await cursor.fetchone()

    async def _lock_snapshot(self, conn: psycopg.AsyncConnection[Any], instance_id: str) -> Any:
        """Lock the instance's row for this transaction; ``(doc, version, state, incarnation)`` or
        ``None``."""
        return await self._fetchone(
            conn,
            "SELECT doc, version, state, incarnation FROM {s}.snapshots WHERE instance_id = %s FOR UPDATE",
            (instance_id,),
        )

    async def _check_holding(
        self, conn: psycopg.AsyncConnection[Any], claim: TaskClaim, incarnation: Any
    ) -> None:
        """``ClaimLostError`` unless ``claim`` is the live holding in ``incarnation``; the claim
        row stays share-locked, holding off a takeover until the transaction ends."""
        holding = await self._fetchone(
            conn,
            "SELECT holder, token, " + _EXPIRED + ", incarnation FROM {s}.task_claims c "
            "WHERE instance_id = %(instance)s AND task_id = %(task)s FOR SHARE",
            {"instance": claim.instance_id, "task": claim.task_id, **self._stamp()},
        )
        if (
            holding is None
            or holding[:2] != (claim.worker_id, claim.token)
            or holding[2]
            or holding[3] != incarnation
        ):
            raise ClaimLostError(
                f"worker {claim.worker_id!r} no longer holds task {claim.task_id!r} of "
                f"{claim.instance_id!r} with token {claim.token}"
            )

    async def _wait_due(
        self, conn: psycopg.AsyncConnection[Any], instance_id: str, wait: AtDelay | AtSignal
    ) -> datetime | None:
        """When the step of ``wait`` is due: a delay's wake time; for a signal wait, the time it
        has been ready already, else now if its signal is pending, else its timeout."""
        if isinstance(wait, AtDelay):
            return wait.wake_at
        row = await self._fetchone(
            conn,
            "SELECT EXISTS (SELECT 1 FROM {s}.signals WHERE instance_id = %s AND name = %s), "
            "(SELECT ready_at FROM {s}.ready_tasks WHERE instance_id = %s AND task_id = %s)",
            (instance_id, wait.signal_name, instance_id, wait.step_id),
        )
        now = self._clock.now()
        if row[0]:
            return row[1] if row[1] is not None and row[1] <= now else now
        return wait.timeout_at

    async def _index_step(
        self, conn: psycopg.AsyncConnection[Any], instance_id: str, step_id: str, priority: int, due: datetime
    ) -> None:
        await conn.execute(
            self._sql(
                "INSERT INTO {s}.ready_tasks (instance_id, task_id, priority, ready_at) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (instance_id, task_id) "
                "DO UPDATE SET priority = EXCLUDED.priority, ready_at = EXCLUDED.ready_at"
            ),
            (instance_id, step_id, priority, due),
        )

    def _parse(self, doc: str, instance_id: str) -> WorkflowSnapshot:
        """A stored document (without results) as a snapshot."""
        name = f"postgres snapshot {instance_id!r}"
        return snapshot_from_reader(open_envelope(loads(doc.encode(), name), "snapshot", name), {}, None)

    # -- snapshots -------------------------------------------------------------------------
    async def save_snapshot(self, snapshot: WorkflowSnapshot) -> str:
        check_snapshot(snapshot)
        doc = snapshot_to_json(snapshot)
        del doc["results"]  # results live in task_results, append-only
        i = snapshot.instance_id
        offered = {t: r.output for t, r in snapshot.completed_tasks.items()}
        candidates = snapshot.available_task_ids()
        wait = snapshot.waiting_on()
        async with self._io() as conn, conn.transaction():
            # A placeholder row gives a new instance a row to lock; it never outlives a failed save.
            await conn.execute(
                self._sql(
                    "INSERT INTO {s}.snapshots (instance_id, doc, version, state) VALUES (%s, '', 0, 'new') "
                    "ON CONFLICT (instance_id) DO NOTHING"
                ),
                (i,),
            )
            _, version, state, _ = await self._lock_snapshot(conn, i)
            found = None if state == "new" else str(version)
            if state not in ("new", "in_progress"):
                raise ConflictError(f"instance {i!r} is terminal; its state is final")
            if snapshot.version is not None and snapshot.version != found:
                raise ConflictError(
                    f"instance {i!r} moved: expected version {snapshot.version!r}, found {found!r}"
                )
            cursor = await conn.execute(
                self._sql(
                    "SELECT task_id, output FROM {s}.task_results "
                    "WHERE instance_id = %s AND task_id = ANY(%s::text[])"
                ),
                (i, list(offered) + candidates + ([wait.step_id] if wait else [])),
            )
            recorded = dict(await cursor.fetchall())
            for task_id, output in offered.items():
                if recorded.get(task_id, output) != output:
                    raise ConflictError(f"task {task_id!r} of {i!r} already has another output")
            await conn.execute(
                self._sql(
                    "INSERT INTO {s}.task_results (instance_id, task_id, output) "
                    "SELECT %s, unnest(%s::text[]), unnest(%s::bytea[]) ON CONFLICT DO NOTHING"
                ),
                (i, list(offered), list(offered.values())),
            )
            (new_version,) = await self._fetchone(
                conn,
                "UPDATE {s}.snapshots SET doc = %s, version = nextval('{s}.versions'), state = %s, "
                "last_completed_task_id = %s, "
                # Only the placeholder has none: a new incarnation (COALESCE is lazy).
                "incarnation = COALESCE(incarnation, nextval('{s}.versions')) "
                "WHERE instance_id = %s RETURNING version",
                (dumps(doc).decode(), doc["state"]["type"], snapshot.last_completed_task_id, i),
            )
            if snapshot.is_terminal:
                await conn.execute(self._sql("DELETE FROM {s}.pause_requests WHERE instance_id = %s"), (i,))
            # The ready index: tasks offered now, keeping the ready time of those already there,
            # and the step of a wait from its due time.
            ready = [t for t in candidates if t not in recorded]
            due = None
            if wait is not None and wait.step_id not in recorded:
                due = await self._wait_due(conn, i, wait)
            await conn.execute(
                self._sql(
                    "DELETE FROM {s}.ready_tasks WHERE instance_id = %s AND NOT task_id = ANY(%s::text[])"
                ),
                (i, ready + ([wait.step_id] if wait is not None and due is not None else [])),
            )
            if wait is not None and due is not None:
                await self._index_step(conn, i, wait.step_id, snapshot.priority, due)
            await conn.execute(
                self._sql(
                    "INSERT INTO {s}.ready_tasks (instance_id, task_id, priority, ready_at) "
                    "SELECT %s, unnest(%s::text[]), %s, %s "
                    "ON CONFLICT (instance_id, task_id) DO UPDATE SET priority = EXCLUDED.priority"
                ),
                (i, ready, snapshot.priority, self._clock.now()),
            )
        snapshot.version = str(new_version)
        return snapshot.version

    async def load_snapshot(self, instance_id: str) -> WorkflowSnapshot:
        check_ids(instance_id)
        async with self._io() as conn:
            row = await self._fetchone(conn, _LOAD, (instance_id,))
        if row is None:
            raise NotFoundError(f"no snapshot for instance {instance_id!r}")
        doc, version, task_ids, outputs = row
        name = f"postgres snapshot {instance_id!r}"
        results = {t: TaskResult(t, out) for t, out in zip(task_ids, outputs, strict=True)}
        return snapshot_from_reader(
            open_envelope(loads(doc.encode(), name), "snapshot", name), results, str(version)
        )

    async def delete_snapshot(self, instance_id: str) -> None:
        check_ids(instance_id)
        async with self._io() as conn, conn.transaction():
            cursor = await conn.execute(
                self._sql("DELETE FROM {s}.snapshots WHERE instance_id = %s"), (instance_id,)
            )
            if cursor.rowcount == 0:
                raise NotFoundError(f"no snapshot for instance {instance_id!r}")
            # Released, not deleted: the next claim continues from the token high-water mark.
            await conn.execute(
                self._sql(
                    "UPDATE {s}.task_claims SET holder = NULL WHERE instance_id = %s AND holder IS NOT NULL"
                ),
                (instance_id,),
            )

    async def list_snapshots(self) -> list[str]:
        async with self._io() as conn:
            cursor = await conn.execute(
                self._sql("SELECT instance_id FROM {s}.snapshots ORDER BY instance_id")
            )
            return [instance_id for (instance_id,) in await cursor.fetchall()]

    # -- task results ----------------------------------------------------------------------
    async def save_task_result(
        self, instance_id: str, task_id: str, output: bytes, *, claim: TaskClaim | None = None
    ) -> None:
        check_ids(instance_id, task_id)
        data = check_output(output)
        check_claim_for(claim, instance_id, task_id)
        i = instance_id
        async with self._io() as conn, conn.transaction():
            snapshot = await self._lock_snapshot(conn, i)
            if snapshot is None:
                raise NotFoundError(f"no snapshot for instance {i!r}")
            if claim is not None:
                await self._check_holding(conn, claim, snapshot[3])
            recorded = await self._fetchone(
                conn,
                "SELECT output FROM {s}.task_results WHERE instance_id = %s AND task_id = %s",
                (i, task_id),
            )
            if recorded is not None:
                if recorded[0] != data:
                    raise ConflictError(f"task {task_id!r} of {i!r} already has another output")
                return
            if snapshot[2] != "in_progress":
                raise ConflictError(f"instance {i!r} is terminal; its state is final")
            await conn.execute(
                self._sql("INSERT INTO {s}.task_results (instance_id, task_id, output) VALUES (%s, %s, %s)"),
                (i, task_id, data),
            )
            await conn.execute(
                self._sql("DELETE FROM {s}.ready_tasks WHERE instance_id = %s AND task_id = %s"), (i, task_id)
            )
            await conn.execute(
                self._sql(
                    "UPDATE {s}.snapshots SET version = nextval('{s}.versions') WHERE instance_id = %s"
                ),
                (i,),
            )

    async def load_task_result(self, instance_id: str, task_id: str) -> bytes | None:
        check_ids(instance_id, task_id)
        async with self._io() as conn:
            row = await self._fetchone(
                conn,
                "SELECT (SELECT output FROM {s}.task_results WHERE instance_id = %s AND task_id = %s) "
                "FROM {s}.snapshots WHERE instance_id = %s",
                (instance_id, task_id, instance_id),
            )
        if row is None:
            raise NotFoundError(f"no snapshot for instance {instance_id!r}")
        return row[0]  # type: ignore[no-any-return]

    # -- claims ----------------------------------------------------------------------------
    async def claim_task(
        self, instance_id: str, task_id: str, worker_id: str, ttl: timedelta | None
    ) -> TaskClaim | None:
        check_ids(instance_id, task_id, worker_id)
        check_duration(ttl, "ttl", optional=True)
        now = self._clock.now()
        expires_at = None if ttl is None else expiry(now, ttl)
        params = {
            "instance": instance_id,
            "task": task_id,
            "worker": worker_id,
            "now": now,
            "expires": expires_at,
            "ttl": None if ttl is None else ttl // timedelta(microseconds=1),
            **self._stamp(),
        }
        async with self._io() as conn:
            row = await self._fetchone(conn, _CLAIM, params)
        if row is None:
            return None
        return TaskClaim(instance_id, task_id, worker_id, now, expires_at, row[0])

    async def _holding(
        self, conn: psycopg.AsyncConnection[Any], instance_id: str, task_id: str, worker_id: str
    ) -> None:
        """Lock the claim row and check that ``worker_id`` holds it in the current incarnation
        (expired is fine, if not taken over)."""
        # The sub-select runs first (an InitPlan), so locks are taken snapshot row, then claim
        # row: the order of every other transaction here.
        row = await self._fetchone(
            conn,
            "SELECT holder, incarnation, "
            "(SELECT incarnation FROM {s}.snapshots WHERE instance_id = %s FOR SHARE) "
            "FROM {s}.task_claims WHERE instance_id = %s AND task_id = %s FOR UPDATE",
            (instance_id, instance_id, task_id),
        )
        if row is None or row[0] is None:
            raise NotFoundError(f"no claim on task {task_id!r} of {instance_id!r}")
        if row[1] != row[2]:
            raise NotFoundError(
                f"the claim on task {task_id!r} of {instance_id!r} was taken in another incarnation"
            )
        if row[0] != worker_id:
            raise ClaimLostError(f"task {task_id!r} of {instance_id!r} is held by another worker")

    async def release_task_claim(self, instance_id: str, task_id: str, worker_id: str) -> None:
        check_ids(instance_id, task_id, worker_id)
        async with self._io() as conn, conn.transaction():
            await self._holding(conn, instance_id, task_id, worker_id)
            await conn.execute(
                self._sql("UPDATE {s}.task_claims SET holder = NULL WHERE instance_id = %s AND task_id = %s"),
                (instance_id, task_id),
            )

    async def extend_task_claim(
        self, instance_id: str, task_id: str, worker_id: str, additional_duration: timedelta
    ) -> TaskClaim:
        check_ids(instance_id, task_id, worker_id)
        check_duration(additional_duration, "additional_duration")
        expires_at = expiry(self._clock.now(), additional_duration)
        async with self._io() as conn, conn.transaction():
            await self._holding(conn, instance_id, task_id, worker_id)
            token, claimed_at, new_expiry = await self._fetchone(
                conn,
                "UPDATE {s}.task_claims SET "
                "expires_at = CASE WHEN expires_at IS NULL THEN NULL ELSE %(expires)s END, "
                "ttl_us = CASE WHEN ttl_us IS NULL THEN NULL ELSE %(ttl)s END, "
                "started = clock_timestamp(), domain = %(domain)s, mono_us = %(mono)s "
                "WHERE instance_id = %(instance)s AND task_id = %(task)s "
                "RETURNING token, claimed_at, expires_at",
                {
                    "expires": expires_at,
                    "ttl": additional_duration // timedelta(microseconds=1),
                    "instance": instance_id,
                    "task": task_id,
                    **self._stamp(),
                },
            )
        # The session's TimeZone decides the tzinfo psycopg returns; the model speaks UTC.
        return TaskClaim(
            instance_id,
            task_id,
            worker_id,
            claimed_at.astimezone(timezone.utc),
            None if new_expiry is None else new_expiry.astimezone(timezone.utc),
            token,
        )

    async def find_available_tasks(self, worker_id: str, limit: int) -> list[AvailableTask]:
        validate_id(worker_id, "worker_id")
        check_limit(limit)
        if limit == 0:
            return []
        async with self._io() as conn:
            cursor = await conn.execute(
                self._sql(_FIND), {"now": self._clock.now(), "limit": limit, **self._stamp()}
            )
            rows = await cursor.fetchall()
        found = []
        for instance_id, task_id, priority, doc, last_output in rows:
            name = f"postgres snapshot {instance_id!r}"
            reader = open_envelope(loads(doc.encode(), name), "snapshot", name)
            task_input = last_output if last_output is not None else reader.opt_blob("initial_input")
            found.append(
                AvailableTask(instance_id, task_id, task_input, reader.text("definition_hash"), priority)
            )
        return found

    # -- cancellation ----------------------------------------------------------------------
    async def request_cancellation(self, instance_id: str, reason: str, requested_by: str) -> None:
        check_ids(instance_id)
        check_text(reason, "reason")
        check_text(requested_by, "requested_by")
        request = CancellationRequest(instance_id, reason, requested_by, self._clock.now())
        async with self._io() as conn, conn.transaction():
            snapshot = await self._lock_snapshot(conn, instance_id)
            if snapshot is None:
                raise NotFoundError(f"no snapshot for instance {instance_id!r}")
            state = snapshot[2]
            if state in ("completed", "failed"):
                raise CannotCancelError(f"instance {instance_id!r} is {state.capitalize()}")
            if state == "in_progress":
                await conn.execute(
                    self._sql(
                        "INSERT INTO {s}.cancellation_requests (instance_id, request) VALUES (%s, %s) "
                        "ON CONFLICT (instance_id) DO UPDATE SET request = EXCLUDED.request"
                    ),
                    (instance_id, dumps(cancellation_to_json(request)).decode()),
                )

    async def get_cancellation_request(self, instance_id: str) -> CancellationRequest | None:
        check_ids(instance_id)
        async with self._io() as conn:
            row = await self._fetchone(
                conn, "SELECT request FROM {s}.cancellation_requests WHERE instance_id = %s", (instance_id,)
            )
        if row is None:
            return None
        name = f"postgres cancellation request {instance_id!r}"
        return cancellation_from_json(loads(row[0].encode(), name), name)

    async def clear_cancellation_request(self, instance_id: str) -> None:
        check_ids(instance_id)
        async with self._io() as conn:
            await conn.execute(
                self._sql("DELETE FROM {s}.cancellation_requests WHERE instance_id = %s"), (instance_id,)
            )

    async def check_and_cancel(self, instance_id: str, interrupted_at_task: str | None = None) -> bool:
        check_ids(instance_id)
        check_optional_task_id(interrupted_at_task, "interrupted_at_task")
        i = instance_id
        async with self._io() as conn, conn.transaction():
            snapshot = await self._lock_snapshot(conn, i)
            if snapshot is None:
                raise NotFoundError(f"no snapshot for instance {i!r}")
            doc, _, state, _ = snapshot
            request = await self._fetchone(
                conn, "DELETE FROM {s}.cancellation_requests WHERE instance_id = %s RETURNING request", (i,)
            )
            if request is None or state != "in_progress":
                return False
            name = f"postgres snapshot {i!r}"
            cancelled = snapshot_from_reader(
                open_envelope(loads(doc.encode(), name), "snapshot", name), {}, None
            )
            req = cancellation_from_json(loads(request[0].encode(), name), name)
            cancelled.state = Cancelled(
                req.reason, req.requested_by, self._clock.now(), {}, interrupted_at_task
            )
            new_doc = snapshot_to_json(cancelled)
            del new_doc["results"]
            await conn.execute(
                self._sql(
                    "UPDATE {s}.snapshots SET doc = %s, state = 'cancelled', "
                    "version = nextval('{s}.versions') WHERE instance_id = %s"
                ),
                (dumps(new_doc).decode(), i),
            )
            await conn.execute(self._sql("DELETE FROM {s}.ready_tasks WHERE instance_id = %s"), (i,))
            await conn.execute(self._sql("DELETE FROM {s}.pause_requests WHERE instance_id = %s"), (i,))
            return True

    # -- signals ---------------------------------------------------------------------------
    async def send_signal(self, instance_id: str, name: str, payload: bytes) -> Signal:
        check_ids(instance_id)
        validate_id(name, "name")
        data = check_payload(payload)
        i, now = instance_id, self._clock.now()
        async with self._io() as conn, conn.transaction():
            snapshot = await self._lock_snapshot(conn, i)
            if snapshot is None:
                raise NotFoundError(f"no snapshot for instance {i!r}")
            doc, _, state, _ = snapshot
            if state != "in_progress":
                raise ConflictError(f"instance {i!r} is {state}; it takes no signals")
            (seq,) = await self._fetchone(
                conn,
                "UPDATE {s}.snapshots SET signal_seq = signal_seq + 1 WHERE instance_id = %s "
                "RETURNING signal_seq",
                (i,),
            )
            await conn.execute(
                self._sql(
                    "INSERT INTO {s}.signals (instance_id, seq, name, payload, sent_at) "
                    "VALUES (%s, %s, %s, %s, %s)"
                ),
                (i, seq, name, data, now),
            )
            # A workflow waiting for this name: its step is due now (unless due already).
            stored = self._parse(doc, i)
            wait = stored.waiting_on()
            if isinstance(wait, AtSignal) and wait.signal_name == name:
                done = await self._fetchone(
                    conn,
                    "SELECT 1 FROM {s}.task_results WHERE instance_id = %s AND task_id = %s",
                    (i, wait.step_id),
                )
                due = await self._wait_due(conn, i, wait)
                if done is None and due is not None:
                    await self._index_step(conn, i, wait.step_id, stored.priority, due)
        return Signal(i, name, data, seq, now)

    async def list_signals(self, instance_id: str, name: str | None = None) -> list[Signal]:
        check_ids(instance_id)
        if name is not None:
            validate_id(name, "name")
        async with self._io() as conn:
            cursor = await conn.execute(
                self._sql(
                    "SELECT g.name, g.payload, g.seq, g.sent_at, s.instance_id FROM {s}.snapshots s "
                    "LEFT JOIN {s}.signals g ON g.instance_id = s.instance_id "
                    "AND (%s::text IS NULL OR g.name = %s) WHERE s.instance_id = %s ORDER BY g.seq"
                ),
                (name, name, instance_id),
            )
            rows = await cursor.fetchall()
        if not rows:
            raise NotFoundError(f"no snapshot for instance {instance_id!r}")
        return [
            Signal(instance_id, n, p, seq, sent_at.astimezone(timezone.utc))
            for n, p, seq, sent_at, _ in rows
            if seq is not None
        ]

    async def deliver_signal(self, claim: TaskClaim) -> bytes | None:
        check_claim(claim)
        i = claim.instance_id
        async with self._io() as conn, conn.transaction():
            snapshot = await self._lock_snapshot(conn, i)
            if snapshot is None:
                raise NotFoundError(f"no snapshot for instance {i!r}")
            doc, _, state, incarnation = snapshot
            await self._check_holding(conn, claim, incarnation)
            recorded = await self._fetchone(
                conn,
                "SELECT output FROM {s}.task_results WHERE instance_id = %s AND task_id = %s",
                (i, claim.task_id),
            )
            if recorded is not None:
                return recorded[0]  # type: ignore[no-any-return]
            if state != "in_progress":
                raise ConflictError(f"instance {i!r} is terminal; its state is final")
            wait = self._parse(doc, i).waiting_on()
            if not isinstance(wait, AtSignal) or wait.step_id != claim.task_id:
                raise ConflictError(f"instance {i!r} does not wait for a signal at step {claim.task_id!r}")
            taken = await self._fetchone(
                conn,
                "DELETE FROM {s}.signals WHERE (instance_id, seq) = (SELECT instance_id, seq "
                "FROM {s}.signals WHERE instance_id = %s AND name = %s ORDER BY seq LIMIT 1) "
                "RETURNING payload",
                (i, wait.signal_name),
            )
            if taken is None:
                return None
            await conn.execute(
                self._sql("INSERT INTO {s}.task_results (instance_id, task_id, output) VALUES (%s, %s, %s)"),
                (i, claim.task_id, taken[0]),
            )
            await conn.execute(
                self._sql("DELETE FROM {s}.ready_tasks WHERE instance_id = %s AND task_id = %s"),
                (i, claim.task_id),
            )
            await conn.execute(
                self._sql(
                    "UPDATE {s}.snapshots SET version = nextval('{s}.versions') WHERE instance_id = %s"
                ),
                (i,),
            )
            return taken[0]  # type: ignore[no-any-return]

    # -- pause -----------------------------------------------------------------------------
    async def pause_instance(self, instance_id: str, reason: str, requested_by: str) -> None:
        check_ids(instance_id)
        check_text(reason, "reason")
        check_text(requested_by, "requested_by")
        request = PauseRequest(reason, requested_by, self._clock.now())
        async with self._io() as conn, conn.transaction():
            snapshot = await self._lock_snapshot(conn, instance_id)
            if snapshot is None:
                raise NotFoundError(f"no snapshot for instance {instance_id!r}")
            if snapshot[2] != "in_progress":
                raise CannotPauseError(f"instance {instance_id!r} is {snapshot[2].capitalize()}")
            await conn.execute(
                self._sql(
                    "INSERT INTO {s}.pause_requests (instance_id, request) VALUES (%s, %s) "
                    "ON CONFLICT (instance_id) DO NOTHING"
                ),
                (instance_id, dumps(pause_to_json(request)).decode()),
            )

    async def resume_instance(self, instance_id: str) -> None:
        check_ids(instance_id)
        async with self._io() as conn, conn.transaction():
            if await self._lock_snapshot(conn, instance_id) is None:
                raise NotFoundError(f"no snapshot for instance {instance_id!r}")
            await conn.execute(
                self._sql("DELETE FROM {s}.pause_requests WHERE instance_id = %s"), (instance_id,)
            )

    async def get_pause_request(self, instance_id: str) -> PauseRequest | None:
        check_ids(instance_id)
        async with self._io() as conn:
            row = await self._fetchone(
                conn, "SELECT request FROM {s}.pause_requests WHERE instance_id = %s", (instance_id,)
            )
        if row is None:
            return None
        name = f"postgres pause request {instance_id!r}"
        return pause_from_json(loads(row[0].encode(), name), name)
