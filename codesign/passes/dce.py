"""Dead-code elimination: drop nodes whose values no output needs, transitively.

Graph inputs always stay, used or not: they are the model's signature (runtime inputs and
the state-dict entries a caller passes by name). Every op in the IR is pure, so a node
nobody reads can go.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from codesign.ir.graph import Graph
from codesign.passes.manager import PassContext
from codesign.passes.registry import Pass, register_pass


def eliminate_dead_nodes(graph: Graph) -> Graph:
    """`graph` without the nodes its outputs do not depend on (regions cleaned too)."""
    live = set(graph.outputs)
    kept = []
    for node in reversed(graph.nodes):
        if node.name in live:
            live.update(node.operands)
            kept.append(node.with_(regions=tuple(eliminate_dead_nodes(r) for r in node.regions))
                        if node.regions else node)
    return graph.with_nodes(reversed(kept))


@register_pass
@dataclass(frozen=True)
class DeadCodeElimination(Pass):
    """Remove unused nodes; keep every graph input."""

    name: ClassVar[str] = "dce"
    summary: ClassVar[str] = "remove nodes whose results are unused (transitively); inputs stay"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        return eliminate_dead_nodes(graph)
