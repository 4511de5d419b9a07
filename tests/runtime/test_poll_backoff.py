"""An idle worker polls less and less often, up to its cap, and is back at ``poll_interval`` when
work appears. Counted on the backend (what each poll sees), never timed."""

from __future__ import annotations

from typing import Any

import pytest

from objstore_wfp import InMemoryBackend
from objstore_wfp.model import AvailableTask
from objstore_wfp.runtime import Client, Flow, Worker

BASE, CAP = 0.001, 0.008


def incr(x: int) -> int:
    return x + 1


FLOW = Flow("backoff").step(incr)


class PollRecordingBackend(InMemoryBackend):
    """Records, at every poll, the wait the worker has lined up for an empty answer, and what the
    poll found; ``on_poll(n)`` runs before poll number ``n`` (1-based) is answered."""

    def __init__(self) -> None:
        super().__init__()
        self.worker: Worker | None = None
        self.polls: list[tuple[float, int]] = []
        self.on_poll: dict[int, Any] = {}

    async def find_available_tasks(self, worker_id: str, limit: int) -> list[AvailableTask]:
        assert self.worker is not None
        n = len(self.polls) + 1
        if n in self.on_poll:
            await self.on_poll[n]()
        found = await super().find_available_tasks(worker_id, limit)
        self.polls.append((self.worker.poll_delay, len(found)))
        return found


def make(backend: PollRecordingBackend, **kwargs: Any) -> Worker:
    worker = Worker(backend, [FLOW], poll_interval=BASE, concurrency=1, **kwargs)
    backend.worker = worker
    return worker


async def test_idle_polls_double_up_to_the_cap_and_snap_back_when_work_appears() -> None:
    backend = PollRecordingBackend()
    worker = make(backend, max_poll_interval=CAP)
    client = Client(backend)

    async def submit() -> None:
        await client.submit(FLOW, 1, instance_id="late")

    async def stop() -> None:
        worker.stop()

    backend.on_poll = {7: submit, 12: stop}
    assert await worker.run_forever(handle_signals=False) == 1
    delays = [delay for delay, _ in backend.polls]
    found = [n for _, n in backend.polls]
    assert found[:6] == [0] * 6 and found[6] == 1 and found[7:] == [0] * (len(found) - 7)
    # Six empty polls: the wait doubles to the cap and stays there.
    assert delays[:7] == [BASE, 2 * BASE, 4 * BASE, CAP, CAP, CAP, CAP]
    # The task ran and finished (concurrency 1: the worker waited for it): back to the base.
    assert delays[7:11] == [BASE, 2 * BASE, 4 * BASE, CAP]
    assert await client.result("late") == 2


async def test_the_default_cap_is_sixteen_poll_intervals_and_equal_values_disable_the_backoff() -> None:
    backend = PollRecordingBackend()
    worker = make(backend)
    assert worker.max_poll_interval == 16 * BASE

    async def stop() -> None:
        worker.stop()

    backend.on_poll = {8: stop}
    await worker.run_forever(handle_signals=False)
    assert [d for d, _ in backend.polls][:7] == [BASE * 2**k for k in (0, 1, 2, 3, 4, 4, 4)]

    fixed = PollRecordingBackend()
    worker = make(fixed, max_poll_interval=BASE)
    fixed.on_poll = {5: stop}
    await worker.run_forever(handle_signals=False)
    assert [d for d, _ in fixed.polls] == [BASE] * 5


@pytest.mark.parametrize(("poll", "cap"), [(0.0, None), (-1.0, None), (1.0, 0.5), (float("nan"), None)])
def test_bad_poll_intervals_are_refused(poll: float, cap: float | None) -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        Worker(InMemoryBackend(), [FLOW], poll_interval=poll, max_poll_interval=cap)
