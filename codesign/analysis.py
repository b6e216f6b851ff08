"""Analyses any pass or report may call: FLOPs, bytes, liveness.

Pure functions of a graph. FLOPs count a multiply-add as two; an MoE node counts its
router plus `top_k` expert bodies per token (each token visits top_k experts).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from codesign.ir.graph import Graph, InputKind, Node
from codesign.ir.ops import OpKind, Template, get_op
from codesign.ir.types import TensorType


def node_flops(node: Node, types: dict[str, TensorType]) -> int:
    op = get_op(node.op)
    operands = [types[o] for o in node.operands]
    flops = op.flops(operands, node.type, op.attr_values(node.attrs))
    if op.template is Template.moe:
        flops += node.attrs["top_k"] * sum(graph_flops(r) for r in node.regions)
    return flops


def graph_flops(graph: Graph) -> int:
    types = graph.types()
    return sum(node_flops(n, types) for n in graph.nodes)


def last_uses(graph: Graph) -> dict[str, int]:
    """Index of the last node reading each value (len(nodes) for graph outputs)."""
    last: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        for o in node.operands:
            last[o] = i
    for o in graph.outputs:
        last[o] = len(graph.nodes)
    return last


def peak_live_bytes(graph: Graph) -> int:
    """Peak bytes of live activations (runtime inputs and node results) in node order.

    Layout ops are counted as materialised, as an unfused interpreter would: an upper bound
    that fusion lowers.
    """
    last = last_uses(graph)
    live = {i.name: i.type.nbytes for i in graph.runtime_inputs if i.name in last}
    current = peak = sum(live.values())
    for i, node in enumerate(graph.nodes):
        if node.name in last:
            live[node.name] = node.type.nbytes
            current += node.type.nbytes
        peak = max(peak, current)
        for o in set(node.operands):
            if o in live and last.get(o) == i:
                current -= live.pop(o)
    return peak


@dataclass(frozen=True)
class GraphStats:
    """What the compile report prints: counts, FLOPs and bytes of one graph."""

    op_counts: dict[str, int]
    flops_by_kind: dict[str, int]
    flops: int
    param_count: int
    param_bytes: int
    buffer_bytes: int
    input_bytes: int
    activation_bytes: int
    peak_activation_bytes: int
    expert_bytes: int  # weights held by moe nodes' experts (movable between tiers)


def graph_stats(graph: Graph) -> GraphStats:
    types = graph.types()
    flops_by_kind: Counter[str] = Counter()
    for node in graph.nodes:
        flops_by_kind[get_op(node.op).kind.value] += node_flops(node, types)
    params = [i for i in graph.inputs if i.kind is InputKind.param]
    buffers = [i for i in graph.inputs if i.kind in (InputKind.buffer, InputKind.const)]
    experts = 0
    for node in graph.walk():
        if get_op(node.op).template is Template.moe:
            experts += sum(types[o].nbytes for o in node.operands[2:]) if node in graph.nodes else 0
    return GraphStats(
        op_counts=dict(sorted(Counter(n.op for n in graph.nodes).items(), key=lambda kv: (-kv[1], kv[0]))),
        flops_by_kind={k: v for k, v in sorted(flops_by_kind.items()) if v},
        flops=sum(flops_by_kind.values()),
        param_count=sum(i.type.numel for i in params),
        param_bytes=sum(i.type.nbytes for i in params),
        buffer_bytes=sum(i.type.nbytes for i in buffers),
        input_bytes=sum(i.type.nbytes for i in graph.runtime_inputs),
        activation_bytes=sum(n.type.nbytes for n in graph.nodes
                             if get_op(n.op).kind is not OpKind.source or n.type.rank > 0),
        peak_activation_bytes=peak_live_bytes(graph),
        expert_bytes=experts,
    )
