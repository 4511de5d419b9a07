"""The reference runtime: flows of Python callables run by workers over any backend.

>>> import asyncio
>>> from objstore_wfp import InMemoryBackend
>>> def double(x): return 2 * x
>>> def plus_one(x): return x + 1
>>> def minus_one(x): return x - 1
>>> def total(outputs): return sum(outputs.values())
>>> flow = Flow("example").step(double).fork(plus_one, minus_one).join(total)
>>> async def main():
...     backend = InMemoryBackend()
...     client = Client(backend, [flow])
...     instance_id = await client.submit(flow, 5)
...     await Worker(backend, [flow], poll_interval=0.01).run_until_idle()
...     return await client.result(instance_id)
>>> asyncio.run(main())
20
"""

from objstore_wfp.runtime.backend import open_backend
from objstore_wfp.runtime.client import Client, IfExists, SyncClient, WorkflowStatus
from objstore_wfp.runtime.codec import Codec, JsonCodec
from objstore_wfp.runtime.errors import (
    FlowDefinitionError,
    InstanceExistsError,
    WorkflowCancelledError,
    WorkflowFailedError,
)
from objstore_wfp.runtime.events import WorkerEvent, WorkerStats
from objstore_wfp.runtime.flow import (
    Child,
    Delay,
    Flow,
    Fork,
    Loop,
    PendingFork,
    Registry,
    Route,
    Step,
    WaitForSignal,
)
from objstore_wfp.runtime.retry import RetryPolicy
from objstore_wfp.runtime.worker import Worker

__all__ = [
    "Child",
    "Client",
    "Codec",
    "Delay",
    "Flow",
    "FlowDefinitionError",
    "Fork",
    "IfExists",
    "InstanceExistsError",
    "JsonCodec",
    "Loop",
    "PendingFork",
    "Registry",
    "RetryPolicy",
    "Route",
    "Step",
    "SyncClient",
    "WaitForSignal",
    "Worker",
    "WorkerEvent",
    "WorkerStats",
    "WorkflowCancelledError",
    "WorkflowFailedError",
    "WorkflowStatus",
    "open_backend",
]
