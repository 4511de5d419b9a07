"""A ``PersistentBackend`` on Redis (redis-py asyncio): an example of a custom backend.

Every read-modify-write runs as one Lua script, so it is atomic on the server: compare-and-swap
on a version field, first-wins task results, claims with fencing tokens, and the ready index
that ``find_available_tasks`` reads, updated in the same script as the snapshot it derives from.
Claim expiry is judged by the backend's injected ``clock``: Python passes ``now`` into the
scripts (Redis's own TTLs and clock are never used), so a test can move time by hand.

Keys (``P`` is the prefix, default ``objstore-wfp:``; ``{id}`` is the instance id verbatim, which
is unambiguous because it always ends the key)::

    P:instances           set    every instance id (list_snapshots)
    P:version             string counter; INCR gives every save a new, never reused version
    P:ready:1 .. P:ready:5 zset  ready tasks of each priority; score = ready time (microseconds
                                 since the epoch, exact in a double), member = instance "\\0" task,
                                 so ZRANGE gives ready time, then instance id, then task id
    P:snap:{id}           hash   doc      snapshot JSON (codec envelope) without results
                                 version  current version
                                 state    in_progress | completed | failed | cancelled
                                 priority, hash (definition hash), input (initial input; absent
                                 for None), last (last completed task id; absent for None):
                                 what find_available_tasks needs without decoding ``doc``
                                 inc      incarnation: the version of the save that created the
                                          instance (kept by overwrites and compare-and-swap)
    P:results:{id}        hash   task id -> output bytes (append-only, first result wins)
    P:readyat:{id}        hash   task id -> ready time of each indexed task (kept across saves)
    P:claims:{id}         hash   task id ->
                                 "token|inc|claimed_at|expires_at|start|ttl|domain|mono|holder"
                                 (microseconds; inc = the instance's incarnation when claimed,
                                 empty = no snapshot existed; claimed_at, expires_at: the
                                 writer's wall clock, for display; start: the server's TIME at
                                 the last claim or renewal; ttl empty = no TTL; domain, mono:
                                 the writer's monotonic clock then; holder empty = released,
                                 token kept). Deleting the instance releases its claims but
                                 keeps them: they are the tokens' high-water marks
    P:cancel:{id}         string pending cancellation request (codec JSON)
    P:pause:{id}          string pause request (codec JSON); removed once the state is final
    P:sigq:{id}           list   seqs of the pending signals, oldest first
    P:sig:{id}            hash   seq -> payload, seq ":n" -> name, seq ":t" -> sent at (us)

The snapshot hash also keeps ``sigseq`` (the instance's signal counter) and, while the workflow
stands at a wait, ``wait_step`` and ``wait_signal`` (the signal's name; empty for a delay). A
wait's step is in the ready set with its due time as score (a delay's wake time, a signal
wait's timeout, or the time its signal came); ``find_available_tasks`` reads scores up to now
only, so a sleeping workflow costs a poll nothing.

Ids never contain control characters, so ``"\\0"`` safely separates instance and task ids.
A claim whose ``inc`` is not the instance's current one (or empty while a snapshot exists)
belongs to a deleted incarnation or to none: it is dead, so it blocks nothing and fences nothing.
The scripts touch keys of several instances (the shared ready sets), so this runs on one Redis
server (with replicas if you like), not on Redis Cluster.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

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
    SerializationError,
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

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_PRIORITIES = range(1, 6)

# Shared by the claim scripts. Times stay strings end to end: Lua 5.1 prints large numbers
# with 14 significant digits, which would round microsecond timestamps.
_CLAIM_LUA = """
local function parse_claim(raw)
  if not raw then return nil end
  local token, inc, claimed, expires, start, ttl, domain, mono, holder =
    string.match(raw, "^(%d+)|(%d*)|(%-?%d+)|(%-?%d*)|(%d+)|(%d*)|([^|]*)|(%-?%d+)|(.*)$")
  return {token = token, inc = inc, claimed = claimed, expires = expires, start = start, ttl = ttl,
          domain = domain, mono = mono, holder = holder}
end
local function format_claim(c)
  return c.token .. "|" .. c.inc .. "|" .. c.claimed .. "|" .. c.expires .. "|" .. c.start .. "|" ..
         c.ttl .. "|" .. c.domain .. "|" .. c.mono .. "|" .. c.holder
end
-- The server's clock in microseconds, as a string (Lua prints numbers to 14 digits only).
local function server_now()
  local t = redis.call("TIME")
  return t[1] .. string.format("%06d", tonumber(t[2]))
end
-- The incarnation claims are judged against: "" while no snapshot exists.
local function incarnation(snap)
  return redis.call("HGET", snap, "inc") or ""
end
-- Held, of incarnation inc, and younger than its TTL by the server's clock and, for a reader
-- sharing the writer's monotonic clock (domain), by that clock too: the larger age counts.
-- Microsecond counts below 2^53 are exact as Lua numbers.
local function is_live(c, inc, now, domain, mono)
  if c.holder == "" or c.inc ~= inc then return false end
  if c.ttl == "" then return true end
  local age = tonumber(now) - tonumber(c.start)
  if c.domain == domain then age = math.max(age, tonumber(mono) - tonumber(c.mono)) end
  return age < tonumber(c.ttl)
end
"""

# The oldest pending signal of a name, as its seq (nil: none). KEYS-free: takes the key names.
_SIGNAL_LUA = """
local function oldest_pending(sigq, sig, name)
  for _, seq in ipairs(redis.call("LRANGE", sigq, 0, -1)) do
    if redis.call("HGET", sig, seq .. ":n") == name then return seq end
  end
  return nil
end
"""

# KEYS: snap, results, readyat, instances, version, ready:1..ready:5, pause, sigq, sig
# ARGV: instance, expected version ("" = none), doc, state, priority, definition hash,
#       has input ("0"/"1"), input, last completed ("" = none), now, wait step ("" = none),
#       wait signal ("" = a delay), wait due without a signal ("" = never), n, n (task, output)
#       pairs, then the tasks the snapshot offers.
_SAVE_SNAPSHOT = (
    _SIGNAL_LUA
    + """
local snap, results, readyat = KEYS[1], KEYS[2], KEYS[3]
local old = redis.call("HMGET", snap, "version", "state", "priority")
if old[1] and old[2] ~= "in_progress" then return {"terminal"} end
if ARGV[2] ~= "" and old[1] ~= ARGV[2] then return {"moved", old[1] or ""} end
local n = tonumber(ARGV[14])
for i = 15, 13 + 2 * n, 2 do
  local have = redis.call("HGET", results, ARGV[i])
  if have and have ~= ARGV[i + 1] then return {"result", ARGV[i]} end
end
-- Every check passed: only now write (a Lua error would not roll back earlier writes).
for i = 15, 13 + 2 * n, 2 do redis.call("HSETNX", results, ARGV[i], ARGV[i + 1]) end
local version = redis.call("INCR", KEYS[5])
redis.call("HSET", snap, "doc", ARGV[3], "version", version, "state", ARGV[4],
           "priority", ARGV[5], "hash", ARGV[6])
if not old[1] then redis.call("HSET", snap, "inc", version) end  -- a new incarnation
if ARGV[7] == "1" then redis.call("HSET", snap, "input", ARGV[8]) else redis.call("HDEL", snap, "input") end
if ARGV[9] ~= "" then redis.call("HSET", snap, "last", ARGV[9]) else redis.call("HDEL", snap, "last") end
local member = ARGV[1] .. "\\0"
local was_ready = {}
local old_ready = redis.call("HGETALL", readyat)
for i = 1, #old_ready, 2 do
  was_ready[old_ready[i]] = old_ready[i + 1]
  redis.call("ZREM", KEYS[5 + tonumber(old[3])], member .. old_ready[i])
end
redis.call("DEL", readyat)
local zset = KEYS[5 + tonumber(ARGV[5])]
for i = 15 + 2 * n, #ARGV do
  local task = ARGV[i]
  if redis.call("HEXISTS", results, task) == 0 then
    local ready_at = was_ready[task] or ARGV[10]
    redis.call("HSET", readyat, task, ready_at)
    redis.call("ZADD", zset, ready_at, member .. task)
  end
end
-- A wait's step is indexed from its due time; a pending signal makes it due (since it was).
local step = ARGV[11]
if step ~= "" and redis.call("HEXISTS", results, step) == 0 then
  local due = ARGV[13]
  if ARGV[12] ~= "" and oldest_pending(KEYS[12], KEYS[13], ARGV[12]) then
    local was = was_ready[step]
    if was and tonumber(was) <= tonumber(ARGV[10]) then due = was else due = ARGV[10] end
  end
  if due ~= "" then
    redis.call("HSET", readyat, step, due)
    redis.call("ZADD", zset, due, member .. step)
  end
  redis.call("HSET", snap, "wait_step", step, "wait_signal", ARGV[12])
else
  redis.call("HDEL", snap, "wait_step", "wait_signal")
end
if ARGV[4] ~= "in_progress" then redis.call("DEL", KEYS[11]) end
redis.call("SADD", KEYS[4], ARGV[1])
return {"ok", version}
"""
)

# KEYS: snap, results, claims, readyat, version, ready:1..ready:5
# ARGV: instance, task, output, check claim ("0"/"1"), claim worker, claim token, domain, mono
_SAVE_RESULT = (
    _CLAIM_LUA
    + """
local state = redis.call("HGET", KEYS[1], "state")
if not state then return "missing" end
if ARGV[4] == "1" then
  local c = parse_claim(redis.call("HGET", KEYS[3], ARGV[2]))
  local live = c and is_live(c, incarnation(KEYS[1]), server_now(), ARGV[7], ARGV[8])
  if not live or c.holder ~= ARGV[5] or c.token ~= ARGV[6] then
    return "lost"
  end
end
local have = redis.call("HGET", KEYS[2], ARGV[2])
if have then
  if have == ARGV[3] then return "ok" end
  return "result"
end
if state ~= "in_progress" then return "terminal" end
redis.call("HSET", KEYS[2], ARGV[2], ARGV[3])
if redis.call("HDEL", KEYS[4], ARGV[2]) == 1 then
  local priority = redis.call("HGET", KEYS[1], "priority")
  redis.call("ZREM", KEYS[5 + tonumber(priority)], ARGV[1] .. "\\0" .. ARGV[2])
end
redis.call("HSET", KEYS[1], "version", redis.call("INCR", KEYS[5]))
return "ok"
"""
)

# KEYS: claims, snap.  ARGV: task, worker, now, expires_at ("" = no TTL), ttl, domain, mono
_CLAIM = (
    _CLAIM_LUA
    + """
local inc = incarnation(KEYS[2])
local c = parse_claim(redis.call("HGET", KEYS[1], ARGV[1]))
local now = server_now()
if c and is_live(c, inc, now, ARGV[6], ARGV[7]) then return false end
local token = 1
if c then token = tonumber(c.token) + 1 end
redis.call("HSET", KEYS[1], ARGV[1],
           format_claim({token = token, inc = inc, claimed = ARGV[3], expires = ARGV[4], start = now,
                         ttl = ARGV[5], domain = ARGV[6], mono = ARGV[7], holder = ARGV[2]}))
return token
"""
)

# KEYS: claims, snap.  ARGV: task, worker, new expires_at (for extend; "" for release), ttl,
#       domain, mono
# Returns "missing", "lost" or {token, claimed_at, expires_at}.
_RELEASE_OR_EXTEND = (
    _CLAIM_LUA
    + """
local c = parse_claim(redis.call("HGET", KEYS[1], ARGV[1]))
if not c or c.holder == "" or c.inc ~= incarnation(KEYS[2]) then return "missing" end
if c.holder ~= ARGV[2] then return "lost" end
if ARGV[3] == "" then
  c.holder = ""
else
  if c.expires ~= "" then
    c.expires = ARGV[3]
    c.ttl = ARGV[4]
  end
  c.start, c.domain, c.mono = server_now(), ARGV[5], ARGV[6]
end
redis.call("HSET", KEYS[1], ARGV[1], format_claim(c))
return {c.token, c.claimed, c.expires}
"""
)

# KEYS: snap, results, readyat, claims, cancel, instances, ready:1..ready:5, pause, sigq, sig.
# ARGV: instance
_DELETE = (
    _CLAIM_LUA
    + """
local priority = redis.call("HGET", KEYS[1], "priority")
if not priority then return 0 end
for _, task in ipairs(redis.call("HKEYS", KEYS[3])) do
  redis.call("ZREM", KEYS[6 + tonumber(priority)], ARGV[1] .. "\\0" .. task)
end
-- Claims are released, not deleted: each keeps its task's token high-water mark.
local claims = redis.call("HGETALL", KEYS[4])
for i = 1, #claims, 2 do
  local c = parse_claim(claims[i + 1])
  if c.holder ~= "" then
    c.holder = ""
    redis.call("HSET", KEYS[4], claims[i], format_claim(c))
  end
end
redis.call("DEL", KEYS[1], KEYS[2], KEYS[3], KEYS[5], KEYS[12], KEYS[13], KEYS[14])
redis.call("SREM", KEYS[6], ARGV[1])
return 1
"""
)

# KEYS: snap, cancel.  ARGV: request JSON
_REQUEST_CANCELLATION = """
local state = redis.call("HGET", KEYS[1], "state")
if not state then return "missing" end
if state == "in_progress" then redis.call("SET", KEYS[2], ARGV[1]) end
return state
"""

# KEYS: snap, cancel, readyat, version, ready:1..ready:5, pause
# ARGV: instance, expected version, expected request, cancelled doc
_CHECK_AND_CANCEL = """
local snap = redis.call("HMGET", KEYS[1], "version", "state", "priority")
if not snap[1] then return "missing" end
local request = redis.call("GET", KEYS[2])
if not request then return "none" end
if snap[2] ~= "in_progress" then
  redis.call("DEL", KEYS[2])
  return "none"
end
if snap[1] ~= ARGV[2] or request ~= ARGV[3] then return "retry" end
for _, task in ipairs(redis.call("HKEYS", KEYS[3])) do
  redis.call("ZREM", KEYS[4 + tonumber(snap[3])], ARGV[1] .. "\\0" .. task)
end
redis.call("DEL", KEYS[2], KEYS[3], KEYS[10])
redis.call("HSET", KEYS[1], "doc", ARGV[4], "state", "cancelled", "version", redis.call("INCR", KEYS[4]))
return "cancelled"
"""

# KEYS: snap, results, readyat, sigq, sig, ready:1..ready:5.  ARGV: instance, name, payload, now
_SEND_SIGNAL = """
local snap = redis.call("HMGET", KEYS[1], "state", "priority", "wait_step", "wait_signal")
if not snap[1] then return {"missing"} end
if snap[1] ~= "in_progress" then return {"terminal", snap[1]} end
local seq = tostring(redis.call("HINCRBY", KEYS[1], "sigseq", 1))
redis.call("RPUSH", KEYS[4], seq)
redis.call("HSET", KEYS[5], seq, ARGV[3], seq .. ":n", ARGV[2], seq .. ":t", ARGV[4])
-- A workflow waiting for this name: its step is due now (unless due already).
if snap[4] == ARGV[2] and redis.call("HEXISTS", KEYS[2], snap[3]) == 0 then
  local was = redis.call("HGET", KEYS[3], snap[3])
  if not was or tonumber(was) > tonumber(ARGV[4]) then
    redis.call("HSET", KEYS[3], snap[3], ARGV[4])
    redis.call("ZADD", KEYS[5 + tonumber(snap[2])], ARGV[4], ARGV[1] .. "\\0" .. snap[3])
  end
end
return {"ok", seq}
"""

# KEYS: snap, results, claims, readyat, sigq, sig, version, ready:1..ready:5
# ARGV: instance, task, worker, token, now (wall clock, for ready times), domain, mono
_DELIVER_SIGNAL = (
    _CLAIM_LUA
    + _SIGNAL_LUA
    + """
local snap = redis.call("HMGET", KEYS[1], "state", "priority", "wait_step", "wait_signal")
if not snap[1] then return {"missing"} end
local c = parse_claim(redis.call("HGET", KEYS[3], ARGV[2]))
if not c or c.holder ~= ARGV[3] or c.token ~= ARGV[4]
    or not is_live(c, incarnation(KEYS[1]), server_now(), ARGV[6], ARGV[7]) then
  return {"lost"}
end
local have = redis.call("HGET", KEYS[2], ARGV[2])
if have then return {"ok", have} end
if snap[1] ~= "in_progress" then return {"terminal"} end
if snap[3] ~= ARGV[2] or not snap[4] or snap[4] == "" then return {"position"} end
local seq = oldest_pending(KEYS[5], KEYS[6], snap[4])
if not seq then return {"none"} end
local payload = redis.call("HGET", KEYS[6], seq)
redis.call("LREM", KEYS[5], 1, seq)
redis.call("HDEL", KEYS[6], seq, seq .. ":n", seq .. ":t")
redis.call("HSET", KEYS[2], ARGV[2], payload)
if redis.call("HDEL", KEYS[4], ARGV[2]) == 1 then
  redis.call("ZREM", KEYS[7 + tonumber(snap[2])], ARGV[1] .. "\\0" .. ARGV[2])
end
redis.call("HSET", KEYS[1], "version", redis.call("INCR", KEYS[7]))
return {"ok", payload}
"""
)

# KEYS: snap, pause.  ARGV: request JSON
_PAUSE = """
local state = redis.call("HGET", KEYS[1], "state")
if not state then return "missing" end
if state == "in_progress" then redis.call("SETNX", KEYS[2], ARGV[1]) end
return state
"""


def _micros(moment: datetime) -> str:
    return str((moment - _EPOCH) // timedelta(microseconds=1))


def _moment(micros: bytes | str) -> datetime:
    return _EPOCH + timedelta(microseconds=int(micros))


def _text(raw: bytes) -> str:
    return raw.decode("utf-8")


class RedisBackend(PersistentBackend):
    """Workflow state in one Redis database, under a key prefix.

    ``client`` must return bytes (``decode_responses=False``, the default); :meth:`close`
    closes it. ``clock`` stamps ready times and claim times; a claim's expiry is judged by the
    server's ``TIME`` and, between workers sharing a monotonic clock (``clock.domain``), by that
    clock: workers' wall clocks need not agree (docs/semantics.md, "Timing assumptions").
    """

    def __init__(
        self, client: aioredis.Redis, *, prefix: str = "objstore-wfp:", clock: Clock | None = None
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._clock = clock or SystemClock()
        self._save_snapshot = client.register_script(_SAVE_SNAPSHOT)
        self._save_result = client.register_script(_SAVE_RESULT)
        self._claim = client.register_script(_CLAIM)
        self._release_or_extend = client.register_script(_RELEASE_OR_EXTEND)
        self._delete = client.register_script(_DELETE)
        self._request_cancellation = client.register_script(_REQUEST_CANCELLATION)
        self._check_and_cancel = client.register_script(_CHECK_AND_CANCEL)
        self._send_signal = client.register_script(_SEND_SIGNAL)
        self._deliver_signal = client.register_script(_DELIVER_SIGNAL)
        self._pause = client.register_script(_PAUSE)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "objstore-wfp:", clock: Clock | None = None) -> RedisBackend:
        """Connect to ``redis://host:port/db``."""
        return cls(aioredis.Redis.from_url(url), prefix=prefix, clock=clock)

    async def close(self) -> None:
        await self._redis.aclose()

    # -- keys and plumbing -----------------------------------------------------------------
    def _key(self, kind: str, instance_id: str = "") -> str:
        return f"{self._prefix}{kind}:{instance_id}" if instance_id else f"{self._prefix}{kind}"

    def _ready_keys(self) -> list[str]:
        return [self._key(f"ready:{p}") for p in _PRIORITIES]

    @asynccontextmanager
    async def _io(self) -> AsyncIterator[None]:
        """Connection and server errors become ``StoreUnavailableError``."""
        try:
            yield
        except RedisError as exc:
            raise StoreUnavailableError(f"redis: {exc}") from exc

    async def _run(self, script: Any, keys: Sequence[str], args: Sequence[bytes | str | int]) -> Any:
        async with self._io():
            return await script(keys=list(keys), args=list(args))

    # -- snapshots -------------------------------------------------------------------------
    async def save_snapshot(self, snapshot: WorkflowSnapshot) -> str:
        check_snapshot(snapshot)
        doc = snapshot_to_json(snapshot)
        del doc["results"]  # results live in their own hash, append-only
        results = [x for t, r in snapshot.completed_tasks.items() for x in (t, r.output)]
        i = snapshot.instance_id
        wait = snapshot.waiting_on()
        due = None if wait is None else wait.wake_at if isinstance(wait, AtDelay) else wait.timeout_at
        reply = await self._run(
            self._save_snapshot,
            [self._key(k, i) for k in ("snap", "results", "readyat")]
            + [self._key("instances"), self._key("version"), *self._ready_keys()]
            + [self._key(k, i) for k in ("pause", "sigq", "sig")],
            [
                i,
                snapshot.version or "",
                dumps(doc),
                doc["state"]["type"],
                snapshot.priority,
                snapshot.definition_hash,
                "0" if snapshot.initial_input is None else "1",
                snapshot.initial_input or b"",
                snapshot.last_completed_task_id or "",
                _micros(self._clock.now()),
                "" if wait is None else wait.step_id,
                wait.signal_name if isinstance(wait, AtSignal) else "",
                "" if due is None else _micros(due),
                len(results) // 2,
                *results,
                *snapshot.available_task_ids(),
            ],
        )
        outcome = reply[0]
        if outcome == b"terminal":
            raise ConflictError(f"instance {i!r} is terminal; its state is final")
        if outcome == b"moved":
            found = _text(reply[1]) or None
            raise ConflictError(
                f"instance {i!r} moved: expected version {snapshot.version!r}, found {found!r}"
            )
        if outcome == b"result":
            raise ConflictError(f"task {_text(reply[1])!r} of {i!r} already has another output")
        snapshot.version = str(reply[1])
        return snapshot.version

    async def load_snapshot(self, instance_id: str) -> WorkflowSnapshot:
        check_ids(instance_id)
        async with self._io(), self._redis.pipeline(transaction=True) as pipe:
            pipe.hmget(self._key("snap", instance_id), ["doc", "version"])
            pipe.hgetall(self._key("results", instance_id))
            (doc, version), raw_results = await pipe.execute()
        if doc is None:
            raise NotFoundError(f"no snapshot for instance {instance_id!r}")
        name = f"redis snapshot {self._key('snap', instance_id)!r}"
        if version is None:
            raise SerializationError(f"{name}: no version field")
        try:
            results = {_text(t): TaskResult(_text(t), out) for t, out in raw_results.items()}
        except UnicodeDecodeError:
            raise SerializationError(f"{name}: a result's task id is not UTF-8") from None
        reader = open_envelope(loads(doc, name), "snapshot", name)
        return snapshot_from_reader(reader, results, _text(version))

    async def delete_snapshot(self, instance_id: str) -> None:
        check_ids(instance_id)
        i = instance_id
        deleted = await self._run(
            self._delete,
            [self._key(k, i) for k in ("snap", "results", "readyat", "claims", "cancel")]
            + [self._key("instances"), *self._ready_keys()]
            + [self._key(k, i) for k in ("pause", "sigq", "sig")],
            [i],
        )
        if not deleted:
            raise NotFoundError(f"no snapshot for instance {i!r}")

    async def list_snapshots(self) -> list[str]:
        async with self._io():
            members = await cast(Awaitable[set[bytes]], self._redis.smembers(self._key("instances")))
        return sorted(_text(m) for m in members)

    # -- task results ----------------------------------------------------------------------
    async def save_task_result(
        self, instance_id: str, task_id: str, output: bytes, *, claim: TaskClaim | None = None
    ) -> None:
        check_ids(instance_id, task_id)
        data = check_output(output)
        check_claim_for(claim, instance_id, task_id)
        i = instance_id
        outcome = await self._run(
            self._save_result,
            [self._key(k, i) for k in ("snap", "results", "claims", "readyat")]
            + [self._key("version"), *self._ready_keys()],
            [
                i,
                task_id,
                data,
                "0" if claim is None else "1",
                claim.worker_id if claim else "",
                claim.token if claim else 0,
                *self._stamp(),
            ],
        )
        if outcome == b"missing":
            raise NotFoundError(f"no snapshot for instance {i!r}")
        if outcome == b"lost":
            assert claim is not None
            raise ClaimLostError(
                f"worker {claim.worker_id!r} no longer holds task {task_id!r} of {i!r} "
                f"with token {claim.token}"
            )
        if outcome == b"result":
            raise ConflictError(f"task {task_id!r} of {i!r} already has another output")
        if outcome == b"terminal":
            raise ConflictError(f"instance {i!r} is terminal; its state is final")

    async def load_task_result(self, instance_id: str, task_id: str) -> bytes | None:
        check_ids(instance_id, task_id)
        async with self._io(), self._redis.pipeline(transaction=True) as pipe:
            pipe.exists(self._key("snap", instance_id))
            pipe.hget(self._key("results", instance_id), task_id)
            exists, output = await pipe.execute()
        if not exists:
            raise NotFoundError(f"no snapshot for instance {instance_id!r}")
        return cast("bytes | None", output)

    # -- claims ----------------------------------------------------------------------------
    async def claim_task(
        self, instance_id: str, task_id: str, worker_id: str, ttl: timedelta | None
    ) -> TaskClaim | None:
        check_ids(instance_id, task_id, worker_id)
        check_duration(ttl, "ttl", optional=True)
        now = self._clock.now()
        expires_at = None if ttl is None else expiry(now, ttl)
        token = await self._run(
            self._claim,
            [self._key("claims", instance_id), self._key("snap", instance_id)],
            [
                task_id,
                worker_id,
                _micros(now),
                "" if expires_at is None else _micros(expires_at),
                "" if ttl is None else ttl // timedelta(microseconds=1),
                *self._stamp(),
            ],
        )
        if token is None:
            return None
        return TaskClaim(instance_id, task_id, worker_id, now, expires_at, int(token))

    async def _release_or_extend_claim(
        self, instance_id: str, task_id: str, worker_id: str, new_expiry: str, ttl: str = ""
    ) -> list[bytes]:
        reply = await self._run(
            self._release_or_extend,
            [self._key("claims", instance_id), self._key("snap", instance_id)],
            [task_id, worker_id, new_expiry, ttl, *self._stamp()],
        )
        if reply == b"missing":
            raise NotFoundError(f"no claim on task {task_id!r} of {instance_id!r}")
        if reply == b"lost":
            raise ClaimLostError(f"task {task_id!r} of {instance_id!r} is held by another worker")
        return cast(list[bytes], reply)

    async def release_task_claim(self, instance_id: str, task_id: str, worker_id: str) -> None:
        check_ids(instance_id, task_id, worker_id)
        await self._release_or_extend_claim(instance_id, task_id, worker_id, "")

    async def extend_task_claim(
        self, instance_id: str, task_id: str, worker_id: str, additional_duration: timedelta
    ) -> TaskClaim:
        check_ids(instance_id, task_id, worker_id)
        check_duration(additional_duration, "additional_duration")
        new_expiry = _micros(expiry(self._clock.now(), additional_duration))
        token, claimed_at, expires_at = await self._release_or_extend_claim(
            instance_id, task_id, worker_id, new_expiry, str(additional_duration // timedelta(microseconds=1))
        )
        return TaskClaim(
            instance_id,
            task_id,
            worker_id,
            _moment(claimed_at),
            _moment(expires_at) if expires_at else None,
            int(token),
        )

    async def find_available_tasks(self, worker_id: str, limit: int) -> list[AvailableTask]:
        validate_id(worker_id, "worker_id")
        check_limit(limit)
        found: list[AvailableTask] = []
        async with self._io():
            seconds, micros = await self._redis.time()
        now = (seconds * 1_000_000 + micros, *self._stamp())  # for leases
        due_by = _micros(self._clock.now())  # ready times (wake and timeout instants: wall clock)
        page = min(max(limit, 16), 512)
        for key in self._ready_keys():
            start = 0
            while len(found) < limit:
                async with self._io():
                    members = cast(
                        list[bytes],
                        await self._redis.zrangebyscore(key, "-inf", due_by, start=start, num=page),
                    )
                    if not members:
                        break
                    start += page
                    found += await self._offerable(members, now, limit - len(found))
        return found

    async def _offerable(
        self, members: list[bytes], now: tuple[int, str, int], limit: int
    ) -> list[AvailableTask]:
        """The index entries in ``members`` that are still offerable now, in order."""
        pairs = [tuple(_text(part) for part in m.split(b"\0", 1)) for m in members]
        async with self._redis.pipeline(transaction=False) as pipe:
            for instance_id, task_id in pairs:
                pipe.hmget(self._key("snap", instance_id), ["hash", "priority", "input", "last", "inc"])
                pipe.hget(self._key("claims", instance_id), task_id)
                pipe.exists(self._key("cancel", instance_id))
                pipe.exists(self._key("pause", instance_id))
            replies = await pipe.execute()
        candidates = []
        for n, (instance_id, task_id) in enumerate(pairs):
            (definition_hash, priority, initial_input, last, inc), claim, cancelling, paused = replies[
                4 * n : 4 * n + 4
            ]
            if (
                definition_hash is None
                or cancelling
                or paused
                or (claim is not None and self._is_live(claim, now, inc))
            ):
                continue
            candidates.append(
                (instance_id, task_id, _text(definition_hash), int(priority), initial_input, last)
            )
        # The input of an offered task is the output of the last completed task, if any.
        async with self._redis.pipeline(transaction=False) as pipe:
            for instance_id, _, _, _, _, last in candidates:
                pipe.hget(self._key("results", instance_id), last or b"")
            last_outputs = await pipe.execute()
        return [
            AvailableTask(
                i, t, last_output if last is not None and last_output is not None else initial, h, p
            )
            for (i, t, h, p, initial, last), last_output in zip(candidates, last_outputs, strict=True)
        ][:limit]

    def _stamp(self) -> tuple[str, int]:
        """This backend's monotonic clock now: its domain and microseconds."""
        return self._clock.domain, round(self._clock.monotonic() * 1_000_000)

    @staticmethod
    def _is_live(raw_claim: bytes, now: tuple[int, str, int], incarnation: bytes | None) -> bool:
        """The Lua ``is_live`` in Python; ``now``: the server's time (microseconds) and this
        backend's monotonic stamp, read at the start of the poll."""
        _token, inc, _claimed, _expires, start, ttl, domain, mono, holder = raw_claim.split(b"|", 8)
        if holder == b"" or inc != (incarnation or b""):
            return False
        if ttl == b"":
            return True
        server, my_domain, my_mono = now
        age = server - int(start)
        if domain.decode() == my_domain:
            age = max(age, my_mono - int(mono))
        return age < int(ttl)

    # -- cancellation ----------------------------------------------------------------------
    async def request_cancellation(self, instance_id: str, reason: str, requested_by: str) -> None:
        check_ids(instance_id)
        check_text(reason, "reason")
        check_text(requested_by, "requested_by")
        request = CancellationRequest(instance_id, reason, requested_by, self._clock.now())
        state = await self._run(
            self._request_cancellation,
            [self._key("snap", instance_id), self._key("cancel", instance_id)],
            [dumps(cancellation_to_json(request))],
        )
        if state == b"missing":
            raise NotFoundError(f"no snapshot for instance {instance_id!r}")
        if state in (b"completed", b"failed"):
            raise CannotCancelError(f"instance {instance_id!r} is {_text(state).capitalize()}")

    async def get_cancellation_request(self, instance_id: str) -> CancellationRequest | None:
        check_ids(instance_id)
        async with self._io():
            raw = cast("bytes | None", await self._redis.get(self._key("cancel", instance_id)))
        if raw is None:
            return None
        name = f"redis cancellation request {self._key('cancel', instance_id)!r}"
        return cancellation_from_json(loads(raw, name), name)

    async def clear_cancellation_request(self, instance_id: str) -> None:
        check_ids(instance_id)
        async with self._io():
            await self._redis.delete(self._key("cancel", instance_id))

    async def check_and_cancel(self, instance_id: str, interrupted_at_task: str | None = None) -> bool:
        check_ids(instance_id)
        check_optional_task_id(interrupted_at_task, "interrupted_at_task")
        i = instance_id
        keys = [self._key("snap", i), self._key("cancel", i), self._key("readyat", i)]
        keys += [self._key("version"), *self._ready_keys(), self._key("pause", i)]
        # Optimistic: build the Cancelled document from what we read, and let the script swap it
        # in only if neither the snapshot nor the request moved meanwhile.
        while True:
            async with self._io(), self._redis.pipeline(transaction=True) as pipe:
                pipe.hmget(keys[0], ["doc", "version"])
                pipe.get(keys[1])
                (doc, version), raw_request = await pipe.execute()
            if doc is None:
                raise NotFoundError(f"no snapshot for instance {i!r}")
            if raw_request is None:
                return False
            name = f"redis snapshot {keys[0]!r}"
            snapshot = snapshot_from_reader(open_envelope(loads(doc, name), "snapshot", name), {}, None)
            cancelled_doc = b""
            if not snapshot.is_terminal:
                request = cancellation_from_json(loads(raw_request, keys[1]), keys[1])
                snapshot.state = Cancelled(
                    request.reason, request.requested_by, self._clock.now(), {}, interrupted_at_task
                )
                new_doc = snapshot_to_json(snapshot)
                del new_doc["results"]
                cancelled_doc = dumps(new_doc)
            outcome = await self._run(self._check_and_cancel, keys, [i, version, raw_request, cancelled_doc])
            if outcome == b"missing":
                raise NotFoundError(f"no snapshot for instance {i!r}")
            if outcome != b"retry":
                return bool(outcome == b"cancelled")

    # -- signals ---------------------------------------------------------------------------
    async def send_signal(self, instance_id: str, name: str, payload: bytes) -> Signal:
        check_ids(instance_id)
        validate_id(name, "name")
        data = check_payload(payload)
        i, now = instance_id, self._clock.now()
        reply = await self._run(
            self._send_signal,
            [self._key(k, i) for k in ("snap", "results", "readyat", "sigq", "sig")] + self._ready_keys(),
            [i, name, data, _micros(now)],
        )
        if reply[0] == b"missing":
            raise NotFoundError(f"no snapshot for instance {i!r}")
        if reply[0] == b"terminal":
            raise ConflictError(f"instance {i!r} is {_text(reply[1])}; it takes no signals")
        return Signal(i, name, data, int(reply[1]), now)

    async def list_signals(self, instance_id: str, name: str | None = None) -> list[Signal]:
        check_ids(instance_id)
        if name is not None:
            validate_id(name, "name")
        async with self._io(), self._redis.pipeline(transaction=True) as pipe:
            pipe.exists(self._key("snap", instance_id))
            pipe.lrange(self._key("sigq", instance_id), 0, -1)
            pipe.hgetall(self._key("sig", instance_id))
            exists, seqs, fields = await pipe.execute()
        if not exists:
            raise NotFoundError(f"no snapshot for instance {instance_id!r}")
        signals = [
            Signal(instance_id, _text(fields[q + b":n"]), fields[q], int(q), _moment(fields[q + b":t"]))
            for q in seqs
        ]
        return [s for s in signals if name is None or s.name == name]

    async def deliver_signal(self, claim: TaskClaim) -> bytes | None:
        check_claim(claim)
        i = claim.instance_id
        reply = await self._run(
            self._deliver_signal,
            [self._key(k, i) for k in ("snap", "results", "claims", "readyat", "sigq", "sig")]
            + [self._key("version"), *self._ready_keys()],
            [i, claim.task_id, claim.worker_id, claim.token, _micros(self._clock.now()), *self._stamp()],
        )
        outcome = reply[0]
        if outcome == b"missing":
            raise NotFoundError(f"no snapshot for instance {i!r}")
        if outcome == b"lost":
            raise ClaimLostError(
                f"worker {claim.worker_id!r} no longer holds task {claim.task_id!r} of {i!r} "
                f"with token {claim.token}"
            )
        if outcome == b"terminal":
            raise ConflictError(f"instance {i!r} is terminal; its state is final")
        if outcome == b"position":
            raise ConflictError(f"instance {i!r} does not wait for a signal at step {claim.task_id!r}")
        return None if outcome == b"none" else cast(bytes, reply[1])

    # -- pause -----------------------------------------------------------------------------
    async def pause_instance(self, instance_id: str, reason: str, requested_by: str) -> None:
        check_ids(instance_id)
        check_text(reason, "reason")
        check_text(requested_by, "requested_by")
        request = PauseRequest(reason, requested_by, self._clock.now())
        state = await self._run(
            self._pause,
            [self._key("snap", instance_id), self._key("pause", instance_id)],
            [dumps(pause_to_json(request))],
        )
        if state == b"missing":
            raise NotFoundError(f"no snapshot for instance {instance_id!r}")
        if state != b"in_progress":
            raise CannotPauseError(f"instance {instance_id!r} is {_text(state).capitalize()}")

    async def resume_instance(self, instance_id: str) -> None:
        check_ids(instance_id)
        async with self._io(), self._redis.pipeline(transaction=True) as pipe:
            pipe.exists(self._key("snap", instance_id))
            pipe.delete(self._key("pause", instance_id))
            exists, _ = await pipe.execute()
        if not exists:
            raise NotFoundError(f"no snapshot for instance {instance_id!r}")

    async def get_pause_request(self, instance_id: str) -> PauseRequest | None:
        check_ids(instance_id)
        async with self._io():
            raw = cast("bytes | None", await self._redis.get(self._key("pause", instance_id)))
        if raw is None:
            return None
        name = f"redis pause request {self._key('pause', instance_id)!r}"
        return pause_from_json(loads(raw, name), name)
