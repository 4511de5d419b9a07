"""Issue 11's request floor, per completed task with submit included, counted by kind.

The same measurement as figure 7 of the benchmarks (``benchmarks/floor.py``): a batch of
instances submitted through ``Client.submit`` and run to the end by 1 or 4 workers (asyncio,
each with its own backend). Requests are counts, not times, so the bounds hold on any machine;
the 4-worker runs vary a little with who wins which race, hence whole batches.
"""

from __future__ import annotations

import pytest

from benchmarks.floor import FLOWS, MAX_BILLABLE, MAX_FLEET_RATIO, MAX_TOTAL, Floor, local_url, measure
from tests.backends import StoreTarget

pytestmark = pytest.mark.timeout(300)

INSTANCES = 40


@pytest.fixture(
    params=[
        pytest.param("local", id="local"),
        pytest.param("memory", id="memory"),
        pytest.param("moto_store_target", id="moto", marks=pytest.mark.slow),
    ]
)
def place(request: pytest.FixtureRequest) -> tuple[str, dict[str, object]]:
    if request.param == "local":
        return local_url(), {}
    if request.param == "memory":
        return f"memory://floor-{request.node.name}", {}
    target: StoreTarget = request.getfixturevalue(request.param)
    return target.url, target.options


def _child(place: tuple[str, dict[str, object]], name: str) -> tuple[str, dict[str, object]]:
    return f"{place[0].rstrip('/')}/{name}", place[1]


@pytest.mark.parametrize("flow", list(FLOWS))
async def test_requests_per_task_stay_at_the_floor(place: tuple[str, dict[str, object]], flow: str) -> None:
    one: Floor = await measure(*_child(place, "one"), flow, INSTANCES, 1)
    fleet: Floor = await measure(*_child(place, "four"), flow, INSTANCES, 4)
    table = "\n".join(
        f"  {f.workers:>10} worker(s): {f.billable:.2f} billable, {f.total:.2f} in all: "
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(f.by_kind.items()))
        for f in (one, fleet)
    )
    print(f"\n{flow} ({place[0].split(':')[0]}):\n{table}")
    assert one.billable <= MAX_BILLABLE and one.total <= MAX_TOTAL, table
    assert fleet.billable <= MAX_FLEET_RATIO * one.billable, table
    assert fleet.total <= MAX_FLEET_RATIO * one.total, table
