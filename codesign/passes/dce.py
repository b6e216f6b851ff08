"""Dead-code elimination: drop nodes whose values no output needs, transitively.

Graph inputs always stay, used or not: they are the model's signature (runtime inputs and
the state-dict entries a caller passes by name). Every op in the IR is pure, so a node
nobody reads can go.

Fusion groups are IR, so removing nodes maintains them (`prune_groups`): a group left with
no nodes is dropped, and the other groups keep their ids. Ids are names, not positions — the
verifier allows gaps, and a hand-edited plan or the ledger may refer to a group by its id.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar, Mapping

from codesign.ir.graph import Graph
from codesign.passes.manager import PassContext
from codesign.passes.registry import Pass, register_pass


def prune_groups(graph: Graph, replaced: Mapping[str, str] | None = None) -> Graph:
    """`graph`'s groups kept consistent with its nodes after a pass removed some of them.

    A group with no nodes left is dropped; the others keep their ids (and their order).
    A group whose plan names an anchor that is no longer one of its nodes gets, as anchor,
    the value that replaced it (`replaced`: erased name -> its replacement, as CSE merges a
    node into an equal one) when that value is in the same group, and else no anchor (the
    kernel's anchor is then found from its ops, `codesign.ir.kernels.kernel_anchor`).
    """
    if not graph.groups:
        return graph
    members: dict[int, set[str]] = {}
    for node in graph.nodes:
        if node.group is not None:
            members.setdefault(node.group, set()).add(node.name)
    groups = []
    for group in graph.groups:
        names = members.get(group.id)
        if not names:
            continue
        anchor = group.plan.anchor
        if anchor is not None and anchor not in names:
            substitute = (replaced or {}).get(anchor)
            group = replace(group, plan=replace(group.plan,
                                                anchor=substitute if substitute in names else None))
        groups.append(group)
    return graph if tuple(groups) == graph.groups else replace(graph, groups=tuple(groups))


def eliminate_dead_nodes(graph: Graph) -> Graph:
    """`graph` without the nodes its outputs do not depend on (regions cleaned too); groups
    that lose all their nodes go with them (`prune_groups`)."""
    live = set(graph.outputs)
    kept = []
    for node in reversed(graph.nodes):
        if node.name in live:
            live.update(node.operands)
            kept.append(node.with_(regions=tuple(eliminate_dead_nodes(r) for r in node.regions))
                        if node.regions else node)
    return prune_groups(graph.with_nodes(reversed(kept)))


@register_pass
@dataclass(frozen=True)
class DeadCodeElimination(Pass):
    """Remove unused nodes; keep every graph input."""

    name: ClassVar[str] = "dce"
    summary: ClassVar[str] = "remove nodes whose results are unused (transitively); inputs stay"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        return eliminate_dead_nodes(graph)
