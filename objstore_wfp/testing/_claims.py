"""Conformance: task claims (leases with fencing tokens) and claim-checked task results."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from objstore_wfp.clock import ManualClock
from objstore_wfp.contract import PersistentBackend
from objstore_wfp.errors import ClaimLostError, InvalidArgumentError, NotFoundError
from objstore_wfp.model import AtFork, TaskClaim
from objstore_wfp.testing._support import TICK, TTL, expect, make_snapshot
from objstore_wfp.testing._support import won_claim as _claim


class ClaimTests:
    """Claims: mutual exclusion, expiry and takeover, release, extension, fencing."""

    async def test_claim_fields(self, backend: PersistentBackend, clock: ManualClock) -> None:
        await backend.save_snapshot(make_snapshot())
        claim = await _claim(backend, "w1")
        assert (claim.instance_id, claim.task_id, claim.worker_id) == ("wf-1", "t1", "w1")
        assert claim.claimed_at == clock.now(), "claimed_at must be the backend clock's now"
        assert claim.expires_at == clock.now() + TTL, "expires_at must be now + ttl"
        assert claim.token == 1, "the first claim of a task has fencing token 1"
        assert not claim.is_expired(clock.now())

    async def test_live_claim_blocks_everyone(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        await _claim(backend, "w1")
        assert await backend.claim_task("wf-1", "t1", "w2", TTL) is None, (
            "a live claim was taken by another worker"
        )
        assert await backend.claim_task("wf-1", "t1", "w1", TTL) is None, "claims must not be re-entrant"
        assert await backend.claim_task("wf-1", "t1", "w2", None) is None

    async def test_claims_are_per_task(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        await backend.save_snapshot(make_snapshot("wf-2"))
        await _claim(backend, "w1")
        other_task = await backend.claim_task("wf-1", "t2", "w2", TTL)
        other_instance = await backend.claim_task("wf-2", "t1", "w2", TTL)
        assert other_task is not None and other_task.token == 1
        assert other_instance is not None and other_instance.token == 1

    async def test_one_winner_among_concurrent_claimers(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        results = await asyncio.gather(
            *(backend.claim_task("wf-1", "t1", f"worker-{n:02d}", TTL) for n in range(50))
        )
        winners = [c for c in results if c is not None]
        assert len(winners) == 1, (
            f"expected exactly one winner among 50 claimers, got {len(winners)}: {winners}"
        )
        assert winners[0].token == 1

    async def test_one_winner_among_concurrent_takeovers(
        self, backend: PersistentBackend, clock: ManualClock
    ) -> None:
        await backend.save_snapshot(make_snapshot())
        first = await _claim(backend, "w0")
        clock.advance(TTL)
        results = await asyncio.gather(
            *(backend.claim_task("wf-1", "t1", f"worker-{n:02d}", TTL) for n in range(30))
        )
        winners = [c for c in results if c is not None]
        assert len(winners) == 1, f"expected exactly one takeover among 30 claimers, got {winners}"
        assert winners[0].token == first.token + 1

    async def test_expiry_and_takeover(self, backend: PersistentBackend, clock: ManualClock) -> None:
        await backend.save_snapshot(make_snapshot())
        first = await _claim(backend, "w1")
        clock.advance(TTL - TICK)
        assert await backend.claim_task("wf-1", "t1", "w2", TTL) is None, "claim taken over before it expired"
        clock.advance(TICK)
        assert first.is_expired(clock.now())
        second = await backend.claim_task("wf-1", "t1", "w2", TTL)
        assert second is not None, "an expired claim (now == expires_at) must be taken over"
        assert second.worker_id == "w2" and second.token > first.token
        assert second.token == first.token + 1, "tokens grow by one per change of hands"
        assert second.expires_at == clock.now() + TTL

    async def test_expired_claim_can_be_reclaimed_by_same_worker(
        self, backend: PersistentBackend, clock: ManualClock
    ) -> None:
        await backend.save_snapshot(make_snapshot())
        first = await _claim(backend, "w1")
        clock.advance(TTL * 2)
        second = await _claim(backend, "w1")
        assert second.token == first.token + 1

    async def test_tokens_strictly_increase(self, backend: PersistentBackend, clock: ManualClock) -> None:
        await backend.save_snapshot(make_snapshot())
        tokens = [(await _claim(backend, "w1")).token]
        clock.advance(TTL)
        tokens.append((await _claim(backend, "w2")).token)  # takeover after expiry
        await backend.release_task_claim("wf-1", "t1", "w2")
        tokens.append((await _claim(backend, "w3")).token)  # after release
        await backend.release_task_claim("wf-1", "t1", "w3")
        tokens.append((await _claim(backend, "w3")).token)  # same worker again
        clock.advance(TTL * 5)
        tokens.append((await _claim(backend, "w1", ttl=None)).token)
        assert tokens == [1, 2, 3, 4, 5], f"fencing tokens must be 1, 2, 3, ... got {tokens}"

    async def test_no_ttl_never_expires(self, backend: PersistentBackend, clock: ManualClock) -> None:
        await backend.save_snapshot(make_snapshot())
        claim = await _claim(backend, "w1", ttl=None)
        assert claim.expires_at is None
        clock.advance(timedelta(days=3650))
        assert await backend.claim_task("wf-1", "t1", "w2", TTL) is None, "a claim with ttl=None expired"

    async def test_zero_ttl_is_already_expired(self, backend: PersistentBackend, clock: ManualClock) -> None:
        await backend.save_snapshot(make_snapshot())
        claim = await _claim(backend, "w1", ttl=timedelta(0))
        assert claim.expires_at == clock.now() and claim.is_expired(clock.now())
        assert await backend.claim_task("wf-1", "t1", "w2", TTL) is not None

    async def test_claim_of_unknown_instance_is_harmless(self, backend: PersistentBackend) -> None:
        claim = await backend.claim_task("ghost", "t1", "w1", TTL)
        assert claim is not None, "claim_task does not check that the instance exists (docs/semantics.md)"
        assert await backend.list_snapshots() == [], "a claim made an instance appear"
        assert await backend.find_available_tasks("w", 10) == []
        with expect(NotFoundError, "save_task_result for an unknown instance, with a live claim"):
            await backend.save_task_result("ghost", "t1", b"out", claim=claim)
        with expect(NotFoundError, "load_snapshot of an instance that only has a claim"):
            await backend.load_snapshot("ghost")
        await backend.release_task_claim("ghost", "t1", "w1")

    # -- release -----------------------------------------------------------------------------
    async def test_release_makes_claimable_at_once(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        first = await _claim(backend, "w1", ttl=None)
        await backend.release_task_claim("wf-1", "t1", "w1")
        second = await _claim(backend, "w2")
        assert second.token == first.token + 1

    async def test_release_by_other_worker(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        await _claim(backend, "w1")
        with expect(ClaimLostError, "release_task_claim by a worker that does not hold the claim"):
            await backend.release_task_claim("wf-1", "t1", "w2")
        assert await backend.claim_task("wf-1", "t1", "w2", TTL) is None, "a failed release freed the claim"

    async def test_release_without_claim(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        with expect(NotFoundError, "release_task_claim of a task never claimed"):
            await backend.release_task_claim("wf-1", "t1", "w1")
        await _claim(backend, "w1")
        await backend.release_task_claim("wf-1", "t1", "w1")
        with expect(NotFoundError, "release_task_claim of an already released claim"):
            await backend.release_task_claim("wf-1", "t1", "w1")

    async def test_release_after_expiry(self, backend: PersistentBackend, clock: ManualClock) -> None:
        await backend.save_snapshot(make_snapshot())
        await _claim(backend, "w1")
        clock.advance(TTL * 2)
        await backend.release_task_claim("wf-1", "t1", "w1")  # nobody took over: still ours
        clock.advance(TTL * 2)
        await _claim(backend, "w2")
        with expect(ClaimLostError, "release_task_claim after another worker took over"):
            await backend.release_task_claim("wf-1", "t1", "w1")

    # -- extend ------------------------------------------------------------------------------
    async def test_extend_is_absolute(self, backend: PersistentBackend, clock: ManualClock) -> None:
        await backend.save_snapshot(make_snapshot())
        claim = await _claim(backend, "w1")
        clock.advance(timedelta(seconds=10))
        renewed = await backend.extend_task_claim("wf-1", "t1", "w1", timedelta(seconds=60))
        assert renewed.expires_at == clock.now() + timedelta(seconds=60), (
            "extend_task_claim must set expires_at = now + additional_duration"
        )
        assert renewed.token == claim.token and renewed.worker_id == "w1"
        shorter = await backend.extend_task_claim("wf-1", "t1", "w1", timedelta(seconds=5))
        assert shorter.expires_at == clock.now() + timedelta(seconds=5), (
            "renewal is absolute, also when shorter"
        )
        clock.advance(timedelta(seconds=5) - TICK)
        assert await backend.claim_task("wf-1", "t1", "w2", TTL) is None
        clock.advance(TICK)
        assert await backend.claim_task("wf-1", "t1", "w2", TTL) is not None, (
            "the renewed expiry was not honoured"
        )

    async def test_extend_keeps_claim_alive(self, backend: PersistentBackend, clock: ManualClock) -> None:
        await backend.save_snapshot(make_snapshot())
        await _claim(backend, "w1")
        for _ in range(5):
            clock.advance(TTL - TICK)
            await backend.extend_task_claim("wf-1", "t1", "w1", TTL)
            assert await backend.claim_task("wf-1", "t1", "w2", TTL) is None, (
                "an extended claim was taken over"
            )

    async def test_extend_keeps_no_ttl(self, backend: PersistentBackend, clock: ManualClock) -> None:
        await backend.save_snapshot(make_snapshot())
        await _claim(backend, "w1", ttl=None)
        renewed = await backend.extend_task_claim("wf-1", "t1", "w1", TTL)
        assert renewed.expires_at is None, "extending a claim without TTL must keep it without"
        clock.advance(TTL * 100)
        assert await backend.claim_task("wf-1", "t1", "w2", TTL) is None

    async def test_extend_after_expiry_without_takeover(
        self, backend: PersistentBackend, clock: ManualClock
    ) -> None:
        await backend.save_snapshot(make_snapshot())
        claim = await _claim(backend, "w1")
        clock.advance(TTL * 2)
        renewed = await backend.extend_task_claim("wf-1", "t1", "w1", TTL)
        assert renewed.token == claim.token and renewed.expires_at == clock.now() + TTL
        assert await backend.claim_task("wf-1", "t1", "w2", TTL) is None

    async def test_extend_errors(self, backend: PersistentBackend, clock: ManualClock) -> None:
        await backend.save_snapshot(make_snapshot())
        with expect(NotFoundError, "extend_task_claim of a task never claimed"):
            await backend.extend_task_claim("wf-1", "t1", "w1", TTL)
        await _claim(backend, "w1")
        with expect(ClaimLostError, "extend_task_claim by a worker that does not hold the claim"):
            await backend.extend_task_claim("wf-1", "t1", "w2", TTL)
        clock.advance(TTL)
        await _claim(backend, "w2")
        with expect(ClaimLostError, "extend_task_claim by the previous holder after a takeover"):
            await backend.extend_task_claim("wf-1", "t1", "w1", TTL)
        await backend.release_task_claim("wf-1", "t1", "w2")
        with expect(NotFoundError, "extend_task_claim of a released claim"):
            await backend.extend_task_claim("wf-1", "t1", "w2", TTL)

    @pytest.mark.parametrize(
        "bad", [timedelta(seconds=-1), -TICK, 30, 30.0, "30s"], ids=["neg_s", "neg_us", "int", "float", "str"]
    )
    async def test_bad_durations(self, backend: PersistentBackend, bad: object) -> None:
        await backend.save_snapshot(make_snapshot())
        with expect(InvalidArgumentError, f"claim_task with ttl={bad!r}"):
            await backend.claim_task("wf-1", "t1", "w1", bad)  # type: ignore[arg-type]
        await _claim(backend, "w1")
        with expect(InvalidArgumentError, f"extend_task_claim with additional_duration={bad!r}"):
            await backend.extend_task_claim("wf-1", "t1", "w1", bad)  # type: ignore[arg-type]

    async def test_durations_past_the_calendar(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        with expect(InvalidArgumentError, "claim_task with ttl=timedelta.max (expiry past datetime.max)"):
            await backend.claim_task("wf-1", "t1", "w1", timedelta.max)
        claim = await _claim(backend, "w1", ttl=timedelta(days=365 * 100))
        with expect(InvalidArgumentError, "extend_task_claim with timedelta.max"):
            await backend.extend_task_claim("wf-1", "t1", "w1", timedelta.max)
        assert await backend.claim_task("wf-1", "t1", "w2", TTL) is None
        renewed = await backend.extend_task_claim("wf-1", "t1", "w1", TTL)
        assert renewed.token == claim.token

    # -- results under a claim (fencing) -----------------------------------------------------
    async def test_result_with_live_claim(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        claim = await _claim(backend, "w1")
        await backend.save_task_result("wf-1", "t1", b"out", claim=claim)
        assert await backend.load_task_result("wf-1", "t1") == b"out"

    async def test_result_with_taken_over_claim(self, backend: PersistentBackend, clock: ManualClock) -> None:
        await backend.save_snapshot(make_snapshot())
        old = await _claim(backend, "w1")
        clock.advance(TTL)
        new = await _claim(backend, "w2")
        with expect(ClaimLostError, "save_task_result with a claim another worker took over"):
            await backend.save_task_result("wf-1", "t1", b"stale", claim=old)
        assert await backend.load_task_result("wf-1", "t1") is None, "a stale holder recorded its output"
        await backend.save_task_result("wf-1", "t1", b"fresh", claim=new)
        assert await backend.load_task_result("wf-1", "t1") == b"fresh"

    async def test_result_with_released_claim(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        claim = await _claim(backend, "w1")
        await backend.release_task_claim("wf-1", "t1", "w1")
        with expect(ClaimLostError, "save_task_result with a released claim"):
            await backend.save_task_result("wf-1", "t1", b"out", claim=claim)
        assert await backend.load_task_result("wf-1", "t1") is None

    async def test_result_with_expired_claim(self, backend: PersistentBackend, clock: ManualClock) -> None:
        await backend.save_snapshot(make_snapshot())
        claim = await _claim(backend, "w1")
        clock.advance(TTL)
        with expect(ClaimLostError, "save_task_result with an expired claim nobody took over"):
            await backend.save_task_result("wf-1", "t1", b"out", claim=claim)
        assert await backend.load_task_result("wf-1", "t1") is None

    async def test_result_with_older_token_of_same_worker(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        old = await _claim(backend, "w1")
        await backend.release_task_claim("wf-1", "t1", "w1")
        await _claim(backend, "w1")
        with expect(ClaimLostError, "save_task_result with the same worker's older token"):
            await backend.save_task_result("wf-1", "t1", b"out", claim=old)

    async def test_result_with_forged_claim(self, backend: PersistentBackend, clock: ManualClock) -> None:
        await backend.save_snapshot(make_snapshot())
        real = await _claim(backend, "w1")
        forged = TaskClaim("wf-1", "t1", "w2", real.claimed_at, real.expires_at, real.token)
        with expect(ClaimLostError, "save_task_result with a claim naming a worker that does not hold it"):
            await backend.save_task_result("wf-1", "t1", b"out", claim=forged)
        unclaimed = TaskClaim("wf-1", "t2", "w1", clock.now(), None, 1)
        with expect(ClaimLostError, "save_task_result with a claim for a task nobody claimed"):
            await backend.save_task_result("wf-1", "t2", b"out", claim=unclaimed)

    async def test_result_with_claim_for_another_task(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot(position=AtFork("f", ["a", "b"])))
        await backend.save_snapshot(make_snapshot("wf-2", position=AtFork("f", ["a", "b"])))
        claim_a = await _claim(backend, "w1", task="a")
        with expect(InvalidArgumentError, "save_task_result for task b with a claim on task a"):
            await backend.save_task_result("wf-1", "b", b"out", claim=claim_a)
        with expect(InvalidArgumentError, "save_task_result for another instance with a claim on wf-1"):
            await backend.save_task_result("wf-2", "a", b"out", claim=claim_a)
        with expect(InvalidArgumentError, "save_task_result with a claim that is not a TaskClaim"):
            await backend.save_task_result("wf-1", "a", b"out", claim="w1")  # type: ignore[arg-type]
        assert await backend.load_task_result("wf-1", "b") is None
        assert await backend.load_task_result("wf-2", "a") is None
