"""A small helper that appends well-typed nodes to a graph under construction.

Converters from ATen call it instead of building `Node`s by hand: it picks unique SSA
names, infers result types from the op definitions, and materialises Python scalars as
rank-0 `full` constants of the right element type. Passes that build nodes (`subpixel-conv`)
use it too; it lives with the IR, not the frontend, so that they run without torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from codesign.ir.graph import AttrValue, Graph, Input, Node
from codesign.ir.ops import get_op
from codesign.ir.ops.source import FULL
from codesign.ir.types import DType, TensorType

_NAME_OK = re.compile(r"[^A-Za-z0-9_.$]")


def sanitize(name: str) -> str:
    """A legal SSA name (`[A-Za-z0-9_][A-Za-z0-9_.$]*`) for any string."""
    name = _NAME_OK.sub("_", name)
    return name if name and name[0] != "." and name[0] != "$" else "v" + name


@dataclass
class GraphBuilder:
    """Accumulates inputs and nodes; `finish` returns the frozen `Graph`."""

    name: str
    inputs: list[Input] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    types: dict[str, TensorType] = field(default_factory=dict)
    loc: str | None = None  # stamped on every node added until changed

    def fresh(self, hint: str) -> str:
        base = sanitize(hint)
        name, k = base, 0
        while name in self.types:
            k += 1
            name = f"{base}_{k}"
        return name

    def add_input(self, inp: Input) -> str:
        name = self.fresh(inp.name)
        self.inputs.append(Input(name, inp.type, inp.kind, inp.source))
        self.types[name] = inp.type
        return name

    def add(self, op: str, operands: list[str] | tuple[str, ...], attrs: dict[str, AttrValue] | None = None,
            *, hint: str | None = None, type: TensorType | None = None,
            regions: tuple[Graph, ...] = ()) -> str:
        """Append `op(operands) {attrs}`; its type is inferred unless given (source ops)."""
        attrs = dict(attrs or {})
        opdef = get_op(op)
        if type is None:
            type = opdef.infer([self.types[o] for o in operands], opdef.attr_values(attrs))
            assert type is not None, f"{op} needs an explicit type"
        if 0 in type.shape and opdef is not FULL:  # an empty result has no element to compute (and the
            return self.constant(0, type.dtype, type.shape)  # index maps of layout ops divide by sizes)
        name = self.fresh(hint or op)
        self.nodes.append(Node(name, op, tuple(operands), type, attrs, regions, self.loc))
        self.types[name] = type
        return name

    def constant(self, value: float | int | bool, dtype: DType, shape: tuple[int, ...] = ()) -> str:
        if dtype is DType.i1:
            value = bool(value)
        elif dtype.is_float:
            value = float(value)
        else:
            value = int(value)
        return self.add("full", [], {"value": value}, hint="cst", type=TensorType(shape, dtype))

    def cast(self, value: str, dtype: DType) -> str:
        if self.types[value].dtype is dtype:
            return value
        return self.add("cast", [value], {"dtype": dtype.value}, hint=f"{value}_{dtype.value}")

    def reshape(self, value: str, shape: tuple[int, ...]) -> str:
        if self.types[value].shape == tuple(shape):
            return value
        return self.add("reshape", [value], {"shape": tuple(shape)})

    def finish(self, outputs: list[str]) -> Graph:
        return Graph(self.name, tuple(self.inputs), tuple(self.nodes), tuple(outputs))
