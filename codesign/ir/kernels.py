"""Kernels: the graph seen as its fusion groups, in an order that respects dependences.

Every group becomes one kernel; a node outside any group is a kernel of its own. A group
is legal only if contracting each group to one vertex leaves the graph acyclic — no path
leaves a group and comes back into it — which is what lets a kernel run all at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from codesign.ir.graph import Graph, Group, Node


@dataclass(frozen=True)
class Kernel:
    """One unit of execution: its nodes (SSA order), the values it reads and writes."""

    key: str  # "g3" for group 3, "%name" for a lone node
    group: Group | None
    nodes: tuple[Node, ...]
    inputs: tuple[str, ...]  # values defined outside, in first-use order
    outputs: tuple[str, ...]  # values used outside (or graph outputs), in SSA order

    @property
    def name(self) -> str:
        """A readable kernel name from what it fuses, e.g. `linear_gelu`."""
        ops: list[str] = []
        for n in self.nodes:
            if n.op not in ops and n.op not in ("reshape", "permute", "expand", "full", "cast", "slice"):
                ops.append(n.op)
        return "_".join(ops[:4]) + ("_etc" if len(ops) > 4 else "") if ops else self.nodes[0].op


def kernel_key(node: Node) -> str:
    return f"g{node.group}" if node.group is not None else f"%{node.name}"


def quotient_graph(graph: Graph) -> nx.DiGraph:
    """Groups contracted to single vertices; edges are data dependences between kernels."""
    owner = {n.name: kernel_key(n) for n in graph.nodes}
    dag = nx.DiGraph()
    for index, node in enumerate(graph.nodes):
        key = owner[node.name]
        if key not in dag:
            dag.add_node(key, first=index)
        for operand in node.operands:
            src = owner.get(operand)
            if src is not None and src != key:
                dag.add_edge(src, key)
    return dag


def group_cycle(graph: Graph) -> list[str] | None:
    """A cycle through groups (as kernel keys) if some group is not convex, else None."""
    dag = quotient_graph(graph)
    try:
        cycle = nx.find_cycle(dag)
    except nx.NetworkXNoCycle:
        return None
    return [edge[0] for edge in cycle]


def kernels(graph: Graph) -> list[Kernel]:
    """The graph's kernels in a deterministic topological order (earliest first node first)."""
    dag = quotient_graph(graph)
    order = list(nx.lexicographical_topological_sort(dag, key=lambda k: dag.nodes[k]["first"]))
    members: dict[str, list[Node]] = {k: [] for k in order}
    for node in graph.nodes:
        members[kernel_key(node)].append(node)
    groups = graph.group_map()
    used_outside: dict[str, set[str]] = {}
    for node in graph.nodes:
        for operand in node.operands:
            used_outside.setdefault(operand, set()).add(kernel_key(node))
    result = []
    for key in order:
        nodes = members[key]
        defined = {n.name for n in nodes}
        inputs: list[str] = []
        for n in nodes:
            for o in n.operands:
                if o not in defined and o not in inputs:
                    inputs.append(o)
        outputs = [n.name for n in nodes
                   if n.name in graph.outputs or (used_outside.get(n.name, set()) - {key})]
        group = groups.get(nodes[0].group) if nodes[0].group is not None else None
        result.append(Kernel(key, group, tuple(nodes), tuple(inputs), tuple(outputs)))
    return result
