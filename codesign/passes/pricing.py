"""Predicted times of candidate kernels, for rewrites that weigh a graph change by the cost model.

A rewrite pass (`subpixel-conv`, `channels-last`) compares nodes before and after a change
before any fusion ran, so it prices each candidate kernel as a small graph of its own: the
nodes given, their outside operands as inputs, the last node's value as the output.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from codesign.ir.graph import Graph, Input, Node
from codesign.ir.kernels import Kernel
from codesign.ir.types import TensorType


def kernel_alone(nodes: Sequence[Node], types: Mapping[str, TensorType], name: str = "k0") -> tuple[Graph, Kernel]:
    """`nodes` as one kernel of a graph of their own: outside operands as inputs, the last
    node's value as the output."""
    defined = {n.name for n in nodes}
    inputs = tuple(dict.fromkeys(o for n in nodes for o in n.operands if o not in defined))
    kernel = Kernel(name, None, tuple(nodes), inputs, (nodes[-1].name,))
    return Graph(name, tuple(Input(v, types[v]) for v in inputs), tuple(nodes), kernel.outputs), kernel


def price_kernels(target, groups: Sequence[Sequence[Node]], types: Mapping[str, TensorType]) -> tuple[float, int]:
    """Total predicted time (s) and FLOPs of `groups`, each one kernel, on `target`."""
    from codesign.cost.model import CostModel
    model = CostModel(target)
    total, flops = 0.0, 0
    for i, nodes in enumerate(groups):
        alone, kernel = kernel_alone(nodes, types, f"k{i}")
        cost = model.kernel_cost(alone, kernel)
        total += cost.time
        flops += cost.total_flops
    return total, flops


def kernel_features_alone(target, nodes: Sequence[Node], types: Mapping[str, TensorType]):
    """The cost model's features of `nodes` run as one kernel of their own (`kernel_alone`)."""
    from codesign.cost.model import CostModel
    alone, kernel = kernel_alone(nodes, types)
    return CostModel(target).features(kernel, alone.types())
