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


def price_kernels(target, groups: Sequence[Sequence[Node]], types: Mapping[str, TensorType]) -> tuple[float, int]:
    """Total predicted time (s) and FLOPs of `groups`, each one kernel, on `target`."""
    from codesign.cost.model import CostModel
    model = CostModel(target)
    total, flops = 0.0, 0
    for i, nodes in enumerate(groups):
        defined = {n.name for n in nodes}
        inputs = tuple(dict.fromkeys(o for n in nodes for o in n.operands if o not in defined))
        kernel = Kernel(f"k{i}", None, tuple(nodes), inputs, (nodes[-1].name,))
        alone = Graph(f"k{i}", tuple(Input(v, types[v]) for v in inputs), tuple(nodes), kernel.outputs)
        cost = model.kernel_cost(alone, kernel)
        total += cost.time
        flops += cost.total_flops
    return total, flops
