"""Flow definitions: steps, fork/join, durable delays, signal waits, routing, loops and
child flows.

A flow is an immutable value built by chaining::

    flow = Flow("order").step(validate).fork(charge, reserve).join(combine).step(ship)

Every builder call returns a new flow. Task names default to the callables' ``__name__`` and
become the task ids stored by the backend, so they must be unique within a flow. The
:attr:`Flow.definition_hash` is derived from the flow's name and shape (task names, forks,
joins, delays, waits, routes, loops, children), never from code or durations, so every process
that builds the same flow agrees on it.

Some task ids are derived from a unit's name with :data:`SEPARATOR`: a loop's iterations
(``poll~1``, ``poll~2``, ...) and the wait for a child flow (``ship~done``), so the separator is
refused in names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import orjson

from objstore_wfp.errors import InvalidIdentifierError
from objstore_wfp.ids import validate_id
from objstore_wfp.runtime.errors import FlowDefinitionError

TaskFunction = Callable[[Any], Any | Awaitable[Any]]
"""A task: takes the decoded input, returns a codec-encodable value (sync or ``async def``)."""

#: Task ids starting with this are the runtime's own (e.g. the submit lock) and refused in flows.
RESERVED_PREFIX = "@"
#: Joins a unit's name and a suffix in derived task ids (``poll~2``, ``ship~done``); refused in names.
SEPARATOR = "~"
#: Suffix of the task that waits for a child flow's completion signal.
CHILD_DONE = "done"


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


@dataclass(frozen=True)
class Delay:
    """Waits ``duration`` from the moment the workflow reaches it, holding no worker: the
    position records the wake time and the backend offers the step once it has passed. Its
    output is its input."""

    name: str
    duration: timedelta


@dataclass(frozen=True)
class WaitForSignal:
    """Waits, holding no worker, for a signal named ``signal`` sent to the instance
    (``Client.send_signal``); its output is the signal's payload decoded by the codec. With a
    ``timeout``, once it has passed without a signal the step's output is
    ``on_timeout(input)``, or without ``on_timeout`` the workflow fails."""

    name: str
    signal: str
    timeout: timedelta | None = None
    on_timeout: TaskFunction | None = None


@dataclass(frozen=True)
class Child:
    """Runs ``flow`` as a child instance (id ``<parent id>~<step id>``) on this step's input;
    the step's output is the child's final output. The parent holds no worker while the child
    runs: it waits for the signal the child's last worker sends on completion (a failed child
    fails the parent)."""

    name: str
    flow: Flow


Unit = Step | Delay | WaitForSignal | Child
"""What occupies one place of a flow, a route branch or a loop body."""


@dataclass(frozen=True)
class Route:
    """Runs the branch named by ``key(input)``, or ``default`` when no branch has that name (no
    default: the workflow fails). The branch's output goes to the next node."""

    name: str
    key: Callable[[Any], str]
    branches: tuple[tuple[str, Unit], ...]
    default: Unit | None


@dataclass(frozen=True)
class Loop:
    """Runs ``body`` on its own previous output (first on the loop's input) until
    ``until(output)`` holds, at most ``max_iterations`` times; then the workflow fails
    (``on_max="fail"``) or goes on with the last output (``"exit"``). Iteration ``k`` has the
    task id ``<body name>~k``."""

    body: Unit
    until: Callable[[Any], bool]
    max_iterations: int
    on_max: Literal["fail", "exit"] = "fail"

    @property
    def name(self) -> str:
        return self.body.name


Node = Step | Fork | Delay | WaitForSignal | Child | Route | Loop


@dataclass(frozen=True)
class Place:
    """Where a task id belongs in a flow: ``nodes[index]``, the ``unit`` it runs, ``unit_id``
    (the unit's name, with ``~k`` inside a loop), the loop ``iteration`` (0 outside loops) and
    whether the task is the wait for a child's completion (``child_done``)."""

    index: int
    unit: Unit
    unit_id: str
    iteration: int = 0
    child_done: bool = False


def iteration_id(name: str, iteration: int) -> str:
    """The task id of a loop body's ``iteration`` (from 1).

    >>> iteration_id("poll", 2)
    'poll~2'
    """
    return f"{name}{SEPARATOR}{iteration}"


def child_done_id(unit_id: str) -> str:
    """The task id (and signal name) of the wait for a child flow started by ``unit_id``."""
    return f"{unit_id}{SEPARATOR}{CHILD_DONE}"


def child_instance_id(parent_id: str, unit_id: str) -> str:
    """The instance id of the child flow that ``unit_id`` of instance ``parent_id`` starts.

    >>> child_instance_id("order-7", "ship~2")
    'order-7~ship~2'
    """
    return f"{parent_id}{SEPARATOR}{unit_id}"


def _seconds(value: float | timedelta, what: str) -> timedelta:
    duration = value if isinstance(value, timedelta) else None
    if duration is None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FlowDefinitionError(f"{what} must be seconds or a timedelta, got {value!r}")
        duration = timedelta(seconds=value)
    if duration < timedelta(0):
        raise FlowDefinitionError(f"{what} must not be negative, got {duration}")
    return duration


def _as_unit(unit: TaskFunction | Step | Delay | WaitForSignal | Child | Flow) -> Unit:
    if isinstance(unit, (Step, Delay, WaitForSignal, Child)):
        return unit
    if isinstance(unit, Flow):
        return Child(unit.name, unit)
    return _as_step(unit)


def _unit_shape(unit: Unit) -> list[Any]:
    if isinstance(unit, Step):
        return ["step", unit.name]
    if isinstance(unit, Delay):
        return ["delay", unit.name]
    if isinstance(unit, WaitForSignal):
        return ["signal", unit.name, unit.signal]
    return ["child", unit.name, unit.flow.definition_hash]


def _node_shape(node: Node) -> list[Any]:
    if isinstance(node, Fork):
        return ["fork", node.name, [b.name for b in node.branches], node.join.name]
    if isinstance(node, Route):
        default = None if node.default is None else _unit_shape(node.default)
        return ["route", node.name, [[k, _unit_shape(u)] for k, u in node.branches], default]
    if isinstance(node, Loop):
        return ["loop", _unit_shape(node.body)]
    return _unit_shape(node)


def _node_units(node: Node) -> list[Unit]:
    """The units of a node, in execution order."""
    if isinstance(node, Fork):
        return [*node.branches, node.join]
    if isinstance(node, Route):
        return [u for _, u in node.branches] + ([node.default] if node.default is not None else [])
    if isinstance(node, Loop):
        return [node.body]
    return [node]


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
        self._units: dict[str, tuple[int, Unit]] = {}
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

    def delay(self, duration: float | timedelta, *, name: str | None = None) -> Flow:
        """Append a durable delay of ``duration`` (seconds or a timedelta), counted from when
        the workflow reaches it; its output is its input. Name default: ``delay-<n>``."""
        delays = sum(isinstance(n, Delay) for n in self.nodes)
        step = Delay(name or f"delay-{delays + 1}", _seconds(duration, "a delay"))
        return Flow(self.name, (*self.nodes, step))

    def wait_for_signal(
        self,
        signal: str,
        *,
        timeout: float | timedelta | None = None,
        on_timeout: TaskFunction | None = None,
        name: str | None = None,
    ) -> Flow:
        """Append a wait for the signal named ``signal``; the step's output is the signal's
        decoded payload. ``timeout`` (seconds or a timedelta, from when the workflow reaches
        the wait): once passed without a signal, the output is ``on_timeout(input)`` (a task
        function, retried like one), or the workflow fails if there is none. A signal sent
        before the workflow reaches the wait is kept for it. Name default: ``wait-<signal>``."""
        try:
            validate_id(signal, "signal name")
        except InvalidIdentifierError as exc:
            raise FlowDefinitionError(str(exc)) from None
        if on_timeout is not None and timeout is None:
            raise FlowDefinitionError(f"wait for {signal!r}: on_timeout needs a timeout")
        if on_timeout is not None and not callable(on_timeout):
            raise FlowDefinitionError(f"wait for {signal!r}: on_timeout must be callable")
        limit = None if timeout is None else _seconds(timeout, "a timeout")
        step = WaitForSignal(name or f"wait-{signal}", signal, limit, on_timeout)
        return Flow(self.name, (*self.nodes, step))

    def route(
        self,
        key: Callable[[Any], str],
        branches: Mapping[str, TaskFunction | Unit | Flow],
        *,
        default: TaskFunction | Unit | Flow | None = None,
        name: str | None = None,
    ) -> Flow:
        """Append a choice: ``key(input)`` names the branch to run on the input (a task
        function, a ``Step``/``Delay``/``WaitForSignal``, or a ``Flow`` run as a child), else
        ``default``; with neither the workflow fails. Name default: ``route-<n>``."""
        if not callable(key):
            raise FlowDefinitionError("a route's key must be callable")
        if not branches:
            raise FlowDefinitionError("a route needs at least one branch")
        routes = sum(isinstance(n, Route) for n in self.nodes)
        node = Route(
            name or f"route-{routes + 1}",
            key,
            tuple((str(k), _as_unit(u)) for k, u in branches.items()),
            None if default is None else _as_unit(default),
        )
        return Flow(self.name, (*self.nodes, node))

    def loop(
        self,
        body: TaskFunction | Unit | Flow,
        *,
        until: Callable[[Any], bool],
        max_iterations: int,
        on_max: Literal["fail", "exit"] = "fail",
    ) -> Flow:
        """Append a loop: ``body`` runs on its previous output (first on the loop's input)
        until ``until(output)`` is true; after ``max_iterations`` runs without that the
        workflow fails (``on_max="fail"``) or goes on with the last output (``"exit"``).
        Iterations have the task ids ``<body name>~1``, ``~2``, ..."""
        if not callable(until):
            raise FlowDefinitionError("a loop's until must be callable")
        if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) or max_iterations < 1:
            raise FlowDefinitionError(f"max_iterations must be an int >= 1, got {max_iterations!r}")
        if on_max not in ("fail", "exit"):
            raise FlowDefinitionError(f"on_max must be 'fail' or 'exit', not {on_max!r}")
        return Flow(self.name, (*self.nodes, Loop(_as_unit(body), until, max_iterations, on_max)))

    def child(self, flow: Flow, *, name: str | None = None) -> Flow:
        """Append ``flow`` run as a child instance on the input; its final output is this
        step's output. Name default: the child flow's name."""
        if not isinstance(flow, Flow):
            raise FlowDefinitionError(f"a child must be a Flow, got {type(flow).__name__}")
        flow.check_runnable()
        return Flow(self.name, (*self.nodes, Child(name or flow.name, flow)))

    # -- reading -------------------------------------------------------------------------------
    def task_names(self) -> list[str]:
        """Every task id the flow may record, in execution order (fork and route ids are not
        tasks): every branch of a route, every iteration of a loop, a child's start and wait."""
        names: list[str] = []
        for node in self.nodes:
            count = node.max_iterations if isinstance(node, Loop) else 0
            for unit in _node_units(node):
                ids = [iteration_id(unit.name, k) for k in range(1, count + 1)] if count else [unit.name]
                for unit_id in ids:
                    names.append(unit_id)
                    if isinstance(unit, Child):
                        names.append(child_done_id(unit_id))
        return names

    def task(self, task_id: str) -> Step | None:
        """The step (a task function) that runs under this task id, or ``None``."""
        place = self.place(task_id)
        return place.unit if place is not None and isinstance(place.unit, Step) else None

    def place(self, task_id: str) -> Place | None:
        """Where ``task_id`` belongs in this flow, or ``None`` if it is none of its tasks.

        >>> def poll(x): return x
        >>> flow = Flow("f").loop(poll, until=bool, max_iterations=3)
        >>> flow.place("poll~2").iteration, flow.place("poll") is None, flow.place("poll~4") is None
        (2, True, True)
        """
        base, done = task_id, False
        if base.endswith(SEPARATOR + CHILD_DONE):
            base, done = base[: -len(SEPARATOR + CHILD_DONE)], True
        name, separator, count = base.rpartition(SEPARATOR)
        iteration = int(count) if separator and count.isascii() and count.isdigit() else 0
        if not iteration or str(iteration) != count:
            name, iteration = base, 0
        found = self._units.get(name)
        if found is None:
            return None
        index, unit = found
        node = self.nodes[index]
        limit = node.max_iterations if isinstance(node, Loop) else 0
        if iteration > limit or (limit and not iteration):
            return None
        if done and not isinstance(unit, Child):
            return None
        return Place(index, unit, base, iteration, done)

    def children(self) -> list[Child]:
        """The child-flow units of this flow (not of its children)."""
        return [u for node in self.nodes for u in _node_units(node) if isinstance(u, Child)]

    @property
    def definition_hash(self) -> str:
        """``<name>@<16 hex digits>``: a digest of the flow's name and shape, readable in listings."""
        shape = [_node_shape(n) for n in self.nodes]
        digest = hashlib.sha256(orjson.dumps(["objstore-wfp/flow/1", self.name, shape])).hexdigest()
        return f"{self.name}@{digest[:16]}"

    def check_runnable(self) -> None:
        """Raise :class:`FlowDefinitionError` unless the flow has at least one task."""
        if not self.nodes:
            raise FlowDefinitionError(f"flow {self.name!r} has no steps")

    def _check_names(self) -> None:
        seen: set[str] = set()
        for index, node in enumerate(self.nodes):
            units = _node_units(node)
            names = [u.name for u in units]
            if isinstance(node, (Fork, Route)):
                names.insert(0, node.name)
            for name in names:
                try:
                    validate_id(name, "task name")
                except InvalidIdentifierError as exc:
                    raise FlowDefinitionError(f"flow {self.name!r}: {exc}") from None
                if name.startswith(RESERVED_PREFIX):
                    raise FlowDefinitionError(
                        f"flow {self.name!r}: task name {name!r} must not start with {RESERVED_PREFIX!r}"
                    )
                if SEPARATOR in name:
                    raise FlowDefinitionError(
                        f"flow {self.name!r}: task name {name!r} must not contain {SEPARATOR!r}"
                    )
                if name in seen:
                    raise FlowDefinitionError(f"flow {self.name!r}: task name {name!r} is used twice")
                seen.add(name)
            for unit in units:
                self._units[unit.name] = (index, unit)


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
        #: Child flow hash -> names of the units that start it.
        self._child_units: dict[str, set[str]] = {}
        for flow in flows:
            self.add(flow)

    def add(self, flow: Flow) -> None:
        """Register ``flow`` and its child flows; a different flow with the same hash is refused."""
        flow.check_runnable()
        known = self._flows.get(flow.definition_hash)
        if known is not None and known is not flow:
            raise FlowDefinitionError(
                f"another flow named {flow.name!r} with the same shape is already registered"
            )
        self._flows[flow.definition_hash] = flow
        for child in flow.children():
            self._child_units.setdefault(child.flow.definition_hash, set()).add(child.name)
            if child.flow.definition_hash not in self._flows:
                self.add(child.flow)

    def parent_of(self, instance_id: str, definition_hash: str) -> tuple[str, str] | None:
        """For an instance started as a child flow by a known flow: ``(parent instance id,
        task id of the parent's wait for it)``; else ``None``. Costs nothing for flows never
        used as children.

        >>> def work(x): return x
        >>> inner = Flow("inner").step(work)
        >>> registry = Registry([Flow("outer").child(inner, name="sub")])
        >>> registry.parent_of("order~7~sub", inner.definition_hash)
        ('order~7', 'sub~done')
        """
        names = self._child_units.get(definition_hash)
        if not names:
            return None
        parent, separator, unit_id = instance_id.partition(SEPARATOR)
        while separator:
            name, _, count = unit_id.partition(SEPARATOR)
            if name in names and (not count or count.isdigit()):
                return parent, child_done_id(unit_id)
            head, separator, unit_id = unit_id.partition(SEPARATOR)
            parent = f"{parent}{SEPARATOR}{head}"
        return None

    def get(self, definition_hash: str) -> Flow | None:
        return self._flows.get(definition_hash)

    def __contains__(self, definition_hash: object) -> bool:
        return definition_hash in self._flows

    def __iter__(self) -> Iterator[Flow]:
        return iter(self._flows.values())

    def __len__(self) -> int:
        return len(self._flows)
