"""Textual form of the IR, MLIR-flavoured; `parser.parse_graph` reads it back exactly.

```
graph @mlp(%x: f32[4,16], %fc1.weight: f32[32,16] param) -> (f32[4,32]) {
  %linear = linear(%x, %fc1.weight) : f32[4,32] loc("fc1")
  %relu = relu(%linear) : f32[4,32] loc("act")
  return %relu
}
```
Attributes print sorted by key, floats with `repr` (which round-trips), so the same
graph always prints to the same bytes. A run of repeated layers (`ir.repeats.repetitions`)
is marked by a comment line before its first node, which the parser skips as it skips any
`//` comment:

```
  // repeat model.layers.0..79: 80 blocks of 56 nodes, each the structure of model.layers.0
```
"""

from __future__ import annotations

import json
import math

from codesign.ir.graph import AttrValue, Graph, Input, InputKind, Node
from codesign.ir.repeats import Repetition, repetitions

INDENT = "  "


def format_attr(value: AttrValue) -> str:
    if value is None:
        return "none"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):  # the sign of a NaN is kept (neg, copysign and CSE can tell)
            return "-nan" if math.copysign(1.0, value) < 0 else "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(format_attr(v) for v in value) + "]"
    raise TypeError(f"attribute value {value!r} of type {type(value).__name__} is not printable")


def format_attrs(attrs) -> str:
    if not attrs:
        return ""
    return " {" + ", ".join(f"{k} = {format_attr(attrs[k])}" for k in sorted(attrs)) + "}"


def format_input(inp: Input) -> str:
    text = f"%{inp.name}: {inp.type}"
    if inp.kind is not InputKind.input:
        text += f" {inp.kind.value}"
        if inp.source is not None and inp.source != inp.name:
            text += f" {json.dumps(inp.source)}"
    return text


def format_node(node: Node, indent: str) -> list[str]:
    operands = ", ".join(f"%{o}" for o in node.operands)
    line = f"{indent}%{node.name} = {node.op}({operands}){format_attrs(node.attrs)} : {node.type}"
    if node.group is not None:
        line += f" group({node.group})"
    if node.loc is not None:
        line += f" loc({json.dumps(node.loc)})"
    if not node.regions:
        return [line]
    lines = [line + " ({"]
    for region in node.regions:
        lines += format_graph_lines(region, indent + INDENT)
    lines.append(f"{indent}}})")
    return lines


def repeat_comment(repetition: Repetition) -> str:
    """The comment line marking a run of repeated layers (see the module docstring)."""
    first, last = repetition.blocks[0], repetition.blocks[-1]
    return (f"// repeat {first.path}..{last.index}: {repetition.count} blocks of {len(first)} nodes, "
            f"each the structure of {first.path}")


def format_graph_lines(graph: Graph, indent: str = "") -> list[str]:
    inputs = ", ".join(format_input(i) for i in graph.inputs)
    results = ", ".join(str(t) for t in graph.output_types())
    lines = [f"{indent}graph @{graph.name}({inputs}) -> ({results}) {{"]
    for group in graph.groups:
        lines.append(f"{indent}{INDENT}group {group.id}{format_attrs(group.attrs)}")
    marks = {r.blocks[0].start: repeat_comment(r) for r in repetitions(graph)}
    for i, node in enumerate(graph.nodes):
        if i in marks:
            lines.append(f"{indent}{INDENT}{marks[i]}")
        lines += format_node(node, indent + INDENT)
    lines.append(f"{indent}{INDENT}return " + ", ".join(f"%{o}" for o in graph.outputs))
    lines.append(f"{indent}}}")
    return lines


def print_graph(graph: Graph) -> str:
    """The graph as text, ending in a newline."""
    return "\n".join(format_graph_lines(graph)) + "\n"
