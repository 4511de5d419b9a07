"""Conformance: incarnations (contract guarantee 3, docs/semantics.md "Incarnations").

Deleting an instance and saving the same id again starts a new incarnation. A claim belongs to
the incarnation that was current when it was taken (none, if no snapshot existed); for any other
it is dead: it blocks nothing, records nothing, and can be neither extended nor released.
Fencing tokens of a task never repeat, across incarnations too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta

from objstore_wfp.clock import ManualClock
from objstore_wfp.contract import PersistentBackend
from objstore_wfp.errors import ClaimLostError, ConflictError, NotFoundError
from objstore_wfp.model import AtFork
from objstore_wfp.runtime import Client, Flow
from objstore_wfp.testing._support import TTL, expect, make_snapshot, won_claim


async def _recreate(backend: PersistentBackend, initial_input: bytes = b"second") -> None:
    await backend.delete_snapshot("wf-1")
    await backend.save_snapshot(make_snapshot(initial_input=initial_input))


@contextmanager
def _refused_as_dead(why: str) -> Iterator[None]:
    """A fenced write by a claim of another incarnation: ``ClaimLostError``, or, while no
    snapshot exists, ``NotFoundError`` (docs/semantics.md lets either come)."""
    try:
        yield
    except (ClaimLostError, NotFoundError):
        return
    except Exception as exc:
        raise AssertionError(f"{why}: expected ClaimLostError or NotFoundError, got {exc!r}") from exc
    raise AssertionError(f"{why}: expected ClaimLostError or NotFoundError, but it was accepted")


#: How long the race waits for a worker to record (real time: backends may back off on contention).
RACE_PATIENCE_SECONDS = 60.0


def _step(name: str) -> str:
    return f"ran on {name}"


# Used only for its definition hash and first position: the tests play the worker themselves.
_FLOW = Flow("incarnations").step(_step)


class IncarnationTests:
    """Delete and re-create: tokens keep growing; claims of the old incarnation are dead."""

    # -- tokens ------------------------------------------------------------------------------
    async def test_token_after_delete_and_recreate_is_higher(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        first = await won_claim(backend, "w1", ttl=None)
        await _recreate(backend)
        second = await won_claim(backend, "w1")
        assert second.token == first.token + 1, (
            f"the first claim after delete and re-create must continue the task's tokens "
            f"({first.token} -> {first.token + 1}), got {second.token}"
        )

    async def test_tokens_never_repeat_across_incarnations(
        self, backend: PersistentBackend, clock: ManualClock
    ) -> None:
        tokens = []
        for round_ in range(3):
            await backend.save_snapshot(make_snapshot(initial_input=f"round {round_}".encode()))
            tokens.append((await won_claim(backend, "w1")).token)
            await backend.release_task_claim("wf-1", "t1", "w1")
            tokens.append((await won_claim(backend, "w2", ttl=timedelta(0))).token)
            clock.advance(TTL)  # w2's claim expired and was never released when the instance goes
            await backend.delete_snapshot("wf-1")
        assert tokens == [1, 2, 3, 4, 5, 6], (
            f"fencing tokens must keep growing across incarnations, got {tokens}"
        )

    async def test_token_of_never_released_claim_survives_delete(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot(position=AtFork("f", ["a", "b"])))
        a = await won_claim(backend, "w1", task="a")
        await backend.release_task_claim("wf-1", "a", "w1")
        a = await won_claim(backend, "w1", task="a")
        b = await won_claim(backend, "w2", task="b", ttl=None)
        await backend.delete_snapshot("wf-1")
        # Claims need no snapshot: these are taken while the instance does not exist.
        assert (await won_claim(backend, "w3", task="a")).token == a.token + 1
        assert (await won_claim(backend, "w3", task="b")).token == b.token + 1

    # -- a claim of the deleted incarnation --------------------------------------------------
    async def test_old_claim_cannot_record_into_new_incarnation(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot(initial_input=b"first"))
        old = await won_claim(backend, "w1", ttl=None)
        await _recreate(backend)
        with expect(ClaimLostError, "save_task_result with a claim of the deleted incarnation"):
            await backend.save_task_result("wf-1", "t1", b"from the first input", claim=old)
        assert await backend.load_task_result("wf-1", "t1") is None, (
            "an output computed from the deleted incarnation was recorded into the new one"
        )
        assert (await backend.load_snapshot("wf-1")).completed_tasks == {}

    async def test_old_claim_cannot_record_while_deleted(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        old = await won_claim(backend, "w1", ttl=None)
        await backend.delete_snapshot("wf-1")
        with _refused_as_dead("save_task_result with a claim of a deleted instance"):
            await backend.save_task_result("wf-1", "t1", b"out", claim=old)
        await backend.save_snapshot(make_snapshot())
        assert await backend.load_task_result("wf-1", "t1") is None

    async def test_old_claim_cannot_extend_or_release(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        await won_claim(backend, "w1", ttl=None)
        await _recreate(backend)
        with expect(NotFoundError, "extend_task_claim of a claim of the deleted incarnation"):
            await backend.extend_task_claim("wf-1", "t1", "w1", TTL)
        with expect(NotFoundError, "release_task_claim of a claim of the deleted incarnation"):
            await backend.release_task_claim("wf-1", "t1", "w1")
        new = await won_claim(backend, "w2")
        assert new.token == 2

    async def test_old_claim_does_not_block_new_incarnation(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot(initial_input=b"first"))
        old = await won_claim(backend, "w1", ttl=None)  # never expires: only the incarnation frees it
        await _recreate(backend, b"second")
        found = await backend.find_available_tasks("w2", 10)
        assert [(t.task_id, t.input) for t in found] == [("t1", b"second")], (
            f"a claim of the deleted incarnation must not hide the new one's task, found {found}"
        )
        new = await won_claim(backend, "w2")
        assert new.token == old.token + 1
        assert await backend.find_available_tasks("w3", 10) == [], "the new claim must hide the task"
        assert await backend.claim_task("wf-1", "t1", "w1", TTL) is None, "the new claim must block"

    async def test_old_holder_cannot_touch_the_new_holding(
        self, backend: PersistentBackend, clock: ManualClock
    ) -> None:
        await backend.save_snapshot(make_snapshot())
        old = await won_claim(backend, "w1")
        await _recreate(backend)
        new = await won_claim(backend, "w2")
        with expect(ClaimLostError, "release_task_claim by the old incarnation's holder"):
            await backend.release_task_claim("wf-1", "t1", "w1")
        with expect(ClaimLostError, "extend_task_claim by the old incarnation's holder"):
            await backend.extend_task_claim("wf-1", "t1", "w1", TTL)
        with expect(ClaimLostError, "save_task_result under the old incarnation's claim"):
            await backend.save_task_result("wf-1", "t1", b"stale", claim=old)
        clock.advance(TTL / 2)
        assert await backend.claim_task("wf-1", "t1", "w1", TTL) is None
        await backend.save_task_result("wf-1", "t1", b"fresh", claim=new)
        assert await backend.load_task_result("wf-1", "t1") == b"fresh"

    async def test_same_worker_in_both_incarnations(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot())
        old = await won_claim(backend, "w1", ttl=None)
        await _recreate(backend)
        new = await won_claim(backend, "w1")
        with expect(ClaimLostError, "save_task_result under the same worker's claim of the old incarnation"):
            await backend.save_task_result("wf-1", "t1", b"stale", claim=old)
        renewed = await backend.extend_task_claim("wf-1", "t1", "w1", TTL)
        assert renewed.token == new.token
        await backend.save_task_result("wf-1", "t1", b"fresh", claim=new)
        assert await backend.load_task_result("wf-1", "t1") == b"fresh"

    # -- saves that keep the incarnation -----------------------------------------------------
    async def test_overwrite_and_cas_keep_the_incarnation(self, backend: PersistentBackend) -> None:
        await backend.save_snapshot(make_snapshot(position=AtFork("f", ["a", "b"])))
        a = await won_claim(backend, "w1", task="a")
        await backend.save_snapshot(make_snapshot(position=AtFork("f", ["a", "b"])))  # overwrite
        loaded = await backend.load_snapshot("wf-1")
        loaded.update_position(AtFork("f", ["a", "b", "c"]))
        await backend.save_snapshot(loaded)  # compare-and-swap
        assert await backend.claim_task("wf-1", "a", "w2", TTL) is None, (
            "saving over an existing snapshot must not start a new incarnation"
        )
        await backend.extend_task_claim("wf-1", "a", "w1", TTL)
        await backend.save_task_result("wf-1", "a", b"out", claim=a)
        assert await backend.load_task_result("wf-1", "a") == b"out"
        await backend.release_task_claim("wf-1", "a", "w1")

    # -- a claim taken before the instance existed -------------------------------------------
    async def test_claim_before_create_belongs_to_no_incarnation(self, backend: PersistentBackend) -> None:
        early = await won_claim(backend, "w1", ttl=None)
        await backend.save_snapshot(make_snapshot())
        offered = [t.task_id for t in await backend.find_available_tasks("w2", 10)]
        assert offered == ["t1"], (
            f"a claim taken before the instance existed must not hide its task, found {offered}"
        )
        with expect(ClaimLostError, "save_task_result with a claim taken before the instance existed"):
            await backend.save_task_result("wf-1", "t1", b"early", claim=early)
        assert await backend.load_task_result("wf-1", "t1") is None
        with expect(NotFoundError, "extend_task_claim of a claim taken before the instance existed"):
            await backend.extend_task_claim("wf-1", "t1", "w1", TTL)
        with expect(NotFoundError, "release_task_claim of a claim taken before the instance existed"):
            await backend.release_task_claim("wf-1", "t1", "w1")
        new = await backend.claim_task("wf-1", "t1", "w2", TTL)
        assert new is not None, "a claim taken before the instance existed must not block it"
        assert new.token == early.token + 1

    async def test_claim_before_create_is_live_until_then(self, backend: PersistentBackend) -> None:
        await won_claim(backend, "w1", ttl=None)
        assert await backend.claim_task("wf-1", "t1", "w2", TTL) is None, (
            "while no snapshot exists, a claim taken without one is live"
        )
        await backend.save_snapshot(make_snapshot())
        await backend.delete_snapshot("wf-1")
        with expect(NotFoundError, "release_task_claim of a claim released by delete_snapshot"):
            await backend.release_task_claim("wf-1", "t1", "w1")
        assert (await won_claim(backend, "w2")).token == 2

    # -- the runtime's replace ---------------------------------------------------------------
    async def test_replace_while_the_old_holder_runs(
        self, backend: PersistentBackend, clock: ManualClock
    ) -> None:
        """``Client.submit(..., if_exists="replace")`` (a delete and a create) while a worker
        still runs the task of the old instance: the old worker's heartbeat, result and
        release are all refused, and the new instance runs on its own input."""
        client = Client(backend, [_FLOW])
        await client.submit(_FLOW, "old", instance_id="order")
        [task] = await backend.find_available_tasks("w-old", 10)
        old = await backend.claim_task("order", task.task_id, "w-old", TTL)
        assert old is not None and task.input == b'"old"'

        await client.submit(_FLOW, "new", instance_id="order", if_exists="replace")
        clock.advance(TTL / 3)
        with expect(NotFoundError, "the old worker's heartbeat after its instance was replaced"):
            await backend.extend_task_claim("order", task.task_id, "w-old", TTL)
        found = await backend.find_available_tasks("w-new", 10)
        assert [(t.task_id, t.input) for t in found] == [(task.task_id, b'"new"')], (
            f"the replaced instance must offer its task with the new input at once, found {found}"
        )
        new = await backend.claim_task("order", task.task_id, "w-new", TTL)
        assert new is not None, "the old worker's unexpired claim blocked the replaced instance"
        assert new.token > old.token

        with expect(ClaimLostError, "the old worker recording after its instance was replaced"):
            await backend.save_task_result("order", task.task_id, b'"ran on old"', claim=old)
        with expect(ClaimLostError, "the old worker releasing the new worker's claim"):
            await backend.release_task_claim("order", task.task_id, "w-old")
        await backend.extend_task_claim("order", task.task_id, "w-new", TTL)
        await backend.save_task_result("order", task.task_id, b'"ran on new"', claim=new)
        await backend.release_task_claim("order", task.task_id, "w-new")
        assert await backend.load_task_result("order", task.task_id) == b'"ran on new"'

    async def test_replacing_while_workers_race(self, backend: PersistentBackend) -> None:
        """Workers claim, read the input, and record under their claim, while the instance is
        replaced over and over (sometimes before anyone recorded, so holders of the old
        incarnation are mid-task). Every recorded result was computed from its own
        incarnation's input, and the tokens handed out are 1..N, each once."""
        generations = 10
        tokens: list[int] = []
        seen: dict[int, bytes | None] = {}
        current = [-1]  # the generation saved last; a worker that saw it recorded waits for the next
        replaced, recorded = asyncio.Event(), asyncio.Event()

        async def work(worker: str) -> None:
            finished = -2
            while not replaced.is_set():
                await asyncio.sleep(0)  # a backend that never suspends would starve the others
                if finished == current[0]:
                    continue
                claim = await backend.claim_task("wf-1", "t1", worker, None)  # only a release frees it
                if claim is None:
                    continue
                tokens.append(claim.token)
                generation = current[0]
                try:
                    task_input = (await backend.load_snapshot("wf-1")).initial_input or b""
                    await asyncio.sleep(0)  # let the replacer in between reading and recording
                    output = task_input + b" by " + worker.encode()
                    await backend.save_task_result("wf-1", "t1", output, claim=claim)
                    finished = generation
                    recorded.set()
                except ConflictError:  # another worker recorded first
                    finished = generation
                except (NotFoundError, ClaimLostError):  # replaced meanwhile: try the new one
                    pass
                with suppress(NotFoundError, ClaimLostError):
                    await backend.release_task_claim("wf-1", "t1", worker)

        async def replace() -> None:
            for generation in range(generations):
                await backend.save_snapshot(make_snapshot(initial_input=b"gen-%d" % generation))
                current[0] = generation
                await asyncio.sleep(0)
                # Odd generations wait for a result; even ones are replaced as soon as possible.
                deadline = time.monotonic() + RACE_PATIENCE_SECONDS
                while True:
                    recorded.clear()  # before reading, so a result recorded after the read wakes us
                    seen[generation] = await backend.load_task_result("wf-1", "t1")
                    if seen[generation] is not None or generation % 2 == 0:
                        break
                    if time.monotonic() >= deadline:
                        raise AssertionError(
                            f"no worker recorded into incarnation {generation} within "
                            f"{RACE_PATIENCE_SECONDS}s: does a claim of another incarnation block it?"
                        )
                    with suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(recorded.wait(), deadline - time.monotonic())
                await backend.delete_snapshot("wf-1")
            replaced.set()

        racers = [asyncio.ensure_future(replace())]
        racers += [asyncio.ensure_future(work(f"w{n}")) for n in range(3)]
        try:
            await asyncio.gather(*racers)
        finally:  # on a failure, stop the others instead of leaving them spinning
            for racer in racers:
                racer.cancel()
            await asyncio.gather(*racers, return_exceptions=True)
        for generation, result in seen.items():
            assert result is None or result.startswith(b"gen-%d by " % generation), (
                f"incarnation {generation} recorded {result!r}: computed from another incarnation's input"
            )
        assert all(seen[g] is not None for g in range(1, generations, 2)), seen
        assert sorted(tokens) == list(range(1, len(tokens) + 1)), (
            f"fencing tokens must be handed out once each, across incarnations: {sorted(tokens)}"
        )
        assert (await won_claim(backend, "late")).token == len(tokens) + 1
