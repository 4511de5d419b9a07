"""Flow definitions: sequential steps and fork/join of Python callables.

A flow is an immutable value built by chaining::

    flow = Flow("order").step(validate).fork(charge, reserve).join(combine).step(ship)

Every builder call returns a new flow. Task names default to the callables' ``__name__`` and
become the task ids stored by the backend, so they must be unique within a flow. The
:attr:`Flow.definition_hash` is derived from the flow's name and shape (task names, forks,
joins), never from code, so every process that builds the same flow agrees on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from objstore_wfp.errors import InvalidIdentifierError
from objstore_wfp.ids import validate_id
from objstore_wfp.runtime.errors import FlowDefinitionError

TaskFunction = Callable[[Any], Any | Awaitable[Any]]
"""A task: takes the decoded input, returns a codec-encodable value (sync or ``async def``)."""

#: Task ids starting with this are the runtime's own (e.g. the submit lock) and refused in flows.
RESERVED_PREFIX = "@"


@dataclass(frozen=True)
class Step:
    """One task: ``name`` is its task id, ``fn`` the callable that runs it."""

    name: str
    fn: TaskFunction


@dataclass(frozen=True)
class Fork:
    """Branches that run in parallel, then a join task that receives every branch's output as a
    dict ``{branch name: output}`` in branch order. ``name`` is the fork's id: the gathered
    branch outputs are recorded under it as the join's input."""

    name: str
    branches: tuple[Step, ...]
    join: Step


Node = Step | Fork


def _as_step(task: TaskFunction | Step, name: str | None = None) -> Step:
    if isinstance(task, Step):
        if name is not None:
            return Step(name, task.fn)
        return task
    if not callable(task):
        raise FlowDefinitionError(f"a task must be a callable or a Step, got {type(task).__name__}")
    chosen = name if name is not None else getattr(task, "__name__", None)
    if not isinstance(chosen, str) or chosen == "<lambda>":
        raise FlowDefinitionError(f"cannot name task {task!r}: pass name=... or a Step(name, fn)")
    return Step(chosen, task)


class Flow:
    """An immutable workflow definition; see the module docs.

    >>> def double(x): return x * 2
    >>> def inc(x): return x + 1
    >>> def total(outputs): return sum(outputs.values())
    >>> flow = Flow("demo").step(double).fork(inc, Step("dec", lambda x: x - 1)).join(total)
    >>> flow.task_names()
    ['double', 'inc', 'dec', 'total']
    >>> flow.definition_hash
    'demo@1ccf73b70c95c7eb'
    """

    def __init__(self, name: str, nodes: tuple[Node, ...] = ()) -> None:
        try:
            validate_id(name, "flow name")
        except InvalidIdentifierError as exc:
            raise FlowDefinitionError(str(exc)) from None
        self.name = name
        self.nodes = nodes
        self._check_names()

    def __repr__(self) -> str:
        return f"Flow({self.name!r}, tasks={self.task_names()!r})"

    # -- building ------------------------------------------------------------------------------
    def step(self, fn: TaskFunction | Step, *, name: str | None = None) -> Flow:
        """Append a task that runs on the previous task's output (or the initial input)."""
        return Flow(self.name, (*self.nodes, _as_step(fn, name)))

    def fork(self, *branches: TaskFunction | Step, name: str | None = None) -> PendingFork:
        """Start parallel branches, each on the previous task's output; finish with ``.join()``."""
        if len(branches) < 1:
            raise FlowDefinitionError("a fork needs at least one branch")
        forks = sum(isinstance(n, Fork) for n in self.nodes)
        return PendingFork(self, name or f"fork-{forks + 1}", tuple(_as_step(b) for b in branches))

    # -- reading -------------------------------------------------------------------------------
    def task_names(self) -> list[str]:
        """Every task id of the flow in execution order (fork ids are not tasks)."""
        names: list[str] = []
        for node in self.nodes:
            if isinstance(node, Step):
                names.append(node.name)
            else:
                names.extend(b.name for b in node.branches)
                names.append(node.join.name)
        return names

    def task(self, task_id: str) -> Step | None:
        """The step with this task id, or ``None``."""
        for node in self.nodes:
            steps = (node,) if isinstance(node, Step) else (*node.branches, node.join)
            for step in steps:
                if step.name == task_id:
                    return step
        return None

    @property
    def definition_hash(self) -> str:
        """``<name>@<16 hex digits>``: a digest of the flow's name and shape, readable in listings."""
        shape = [
            ["step", n.name]
            if isinstance(n, Step)
            else ["fork", n.name, [b.name for b in n.branches], n.join.name]
            for n in self.nodes
        ]
        digest = hashlib.sha256(orjson.dumps(["objstore-wfp/flow/1", self.name, shape])).hexdigest()
        return f"{self.name}@{digest[:16]}"

    def check_runnable(self) -> None:
        """Raise :class:`FlowDefinitionError` unless the flow has at least one task."""
        if not self.nodes:
            raise FlowDefinitionError(f"flow {self.name!r} has no steps")

    def _check_names(self) -> None:
        seen: set[str] = set()
        for node in self.nodes:
            names = [node.name] if isinstance(node, Step) else [node.name, *(b.name for b in node.branches)]
            if isinstance(node, Fork):
                names.append(node.join.name)
            for name in names:
                try:
                    validate_id(name, "task name")
                except InvalidIdentifierError as exc:
                    raise FlowDefinitionError(f"flow {self.name!r}: {exc}") from None
                if name.startswith(RESERVED_PREFIX):
                    raise FlowDefinitionError(
                        f"flow {self.name!r}: task name {name!r} must not start with {RESERVED_PREFIX!r}"
                    )
                if name in seen:
                    raise FlowDefinitionError(f"flow {self.name!r}: task name {name!r} is used twice")
                seen.add(name)


class PendingFork:
    """A fork waiting for its join; only :meth:`join` can follow, so no fork is left open."""

    def __init__(self, flow: Flow, name: str, branches: tuple[Step, ...]) -> None:
        self._flow = flow
        self._name = name
        self._branches = branches

    def join(self, fn: TaskFunction | Step, *, name: str | None = None) -> Flow:
        """Close the fork with a task that receives ``{branch name: output}``."""
        fork = Fork(self._name, self._branches, _as_step(fn, name))
        return Flow(self._flow.name, (*self._flow.nodes, fork))


class Registry:
    """The flows a worker or client knows, by definition hash. Explicit on purpose: a worker only
    runs tasks of flows it was given and leaves every other task alone.

    >>> def hello(x): return f"hello {x}"
    >>> registry = Registry([Flow("greet").step(hello)])
    >>> registry.get(Flow("greet").step(hello).definition_hash).name
    'greet'
    """

    def __init__(self, flows: Iterable[Flow] = ()) -> None:
        self._flows: dict[str, Flow] = {}
        for flow in flows:
            self.add(flow)

    def add(self, flow: Flow) -> None:
        """Register ``flow``; a different flow with the same hash is refused."""
        flow.check_runnable()
        known = self._flows.get(flow.definition_hash)
        if known is not None and known is not flow:
            raise FlowDefinitionError(
                f"another flow named {flow.name!r} with the same shape is already registered"
            )
        self._flows[flow.definition_hash] = flow

    def get(self, definition_hash: str) -> Flow | None:
        return self._flows.get(definition_hash)

    def __contains__(self, definition_hash: object) -> bool:
        return definition_hash in self._flows

    def __iter__(self) -> Iterator[Flow]:
        return iter(self._flows.values())

    def __len__(self) -> int:
        return len(self._flows)
