"""The graph IR: SSA values, nodes and graphs.

A `Graph` is a list of `Node`s in SSA order: each node defines one value named `%name`,
reads earlier values by name, and carries a static `TensorType`. Graph inputs are the
model's runtime inputs plus its parameters and buffers (so that a 70B model can be
planned from shapes alone; the tensors themselves live beside the graph, keyed by name).
Everything is frozen: a pass builds a new graph instead of editing one in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Iterator, Mapping, Union

from codesign.ir.plan import GroupPlan
from codesign.ir.types import TensorType

Scalar = Union[int, float, bool, str, None]
AttrValue = Union[Scalar, tuple["AttrValue", ...]]


class InputKind(str, Enum):
    """What a graph input is: a runtime input, or state that lives with the model."""

    input = "input"
    param = "param"
    buffer = "buffer"
    const = "const"

    @property
    def is_state(self) -> bool:
        return self is not InputKind.input


@dataclass(frozen=True)
class Input:
    """A graph argument: `%name: type {kind}`; `source` is the torch state-dict key."""

    name: str
    type: TensorType
    kind: InputKind = InputKind.input
    source: str | None = None


@dataclass(frozen=True)
class Group:
    """A fusion group: nodes that become one kernel, and the decisions made for it.

    Nodes name their group by `id`; `plan` holds the group's decisions as typed data (its
    kind, anchor, tiles per memory level, ... — `codesign.ir.plan`) so that a dump after
    fusion or tiling can be edited and resumed. `Group(id, {"kind": ...})` also accepts the
    text form's key/value pairs (a `PlanError` names a key the plan does not have), and
    `attrs` gives them back.
    """

    id: int
    plan: GroupPlan = field(default_factory=GroupPlan)

    def __post_init__(self) -> None:
        if not isinstance(self.plan, GroupPlan):
            object.__setattr__(self, "plan", GroupPlan.from_attrs(self.plan))

    @property
    def attrs(self) -> Mapping[str, AttrValue]:
        """The plan as the text form's key/value pairs (read-only)."""
        return self.plan.attrs


@dataclass(frozen=True)
class Node:
    """One op application defining the value `%name`.

    `attrs` hold the op's static parameters (sorted by key when printed); `regions` hold
    sub-graphs (an MoE node's expert body); `group` is the fusion group it belongs to, if
    any; `loc` is the torch module path it came from.
    """

    name: str
    op: str
    operands: tuple[str, ...]
    type: TensorType
    attrs: Mapping[str, AttrValue] = field(default_factory=dict)
    regions: tuple["Graph", ...] = ()
    loc: str | None = None
    group: int | None = None

    def attr(self, key: str, default: AttrValue = None) -> AttrValue:
        return self.attrs.get(key, default)

    def with_(self, **changes) -> "Node":
        return replace(self, **changes)


@dataclass(frozen=True)
class Graph:
    """A function: inputs, nodes in SSA order, and the names it returns."""

    name: str
    inputs: tuple[Input, ...]
    nodes: tuple[Node, ...]
    outputs: tuple[str, ...]
    groups: tuple[Group, ...] = ()

    def types(self) -> dict[str, TensorType]:
        """The type of every value defined in this graph, by name."""
        table = {i.name: i.type for i in self.inputs}
        table.update((n.name, n.type) for n in self.nodes)
        return table

    def node_map(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    def users(self) -> dict[str, list[Node]]:
        """Nodes reading each value (graph outputs are not listed)."""
        table: dict[str, list[Node]] = {name: [] for name in self.types()}
        for n in self.nodes:
            for operand in n.operands:
                table.setdefault(operand, []).append(n)
        return table

    def walk(self) -> Iterator[Node]:
        """Every node, including those inside regions (depth first)."""
        for n in self.nodes:
            yield n
            for region in n.regions:
                yield from region.walk()

    @property
    def state_inputs(self) -> tuple[Input, ...]:
        return tuple(i for i in self.inputs if i.kind.is_state)

    @property
    def runtime_inputs(self) -> tuple[Input, ...]:
        return tuple(i for i in self.inputs if not i.kind.is_state)

    def output_types(self) -> tuple[TensorType, ...]:
        types = self.types()
        return tuple(types[o] for o in self.outputs)

    def group_map(self) -> dict[int, Group]:
        return {g.id: g for g in self.groups}

    def with_nodes(self, nodes, outputs=None) -> "Graph":
        return replace(self, nodes=tuple(nodes),
                       outputs=self.outputs if outputs is None else tuple(outputs))

    def __str__(self) -> str:
        from codesign.ir.printer import print_graph
        return print_graph(self)
