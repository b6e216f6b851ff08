"""Kernels: the graph seen as its fusion groups, in an order that respects dependences.

Every group becomes one kernel; a node outside any group is a kernel of its own. A group
is legal only if contracting each group to one vertex leaves the graph acyclic — no path
leaves a group and comes back into it — which is what lets a kernel run all at once.
A kernel's anatomy — its heavy ops, its anchor, the kind its group's plan records — is
read here too (`anchor_of`, `group_kind`, `kernel_anchor`), so the passes, the cost model
and the backends ask one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from codesign.ir.graph import Graph, Group, Node
from codesign.ir.ops import IterKind, OpKind, Template, Trait, get_op, node_structure
from codesign.ir.plan import LAYER

# Nodes that carry a kernel's main loop nest; at most one per group, except the pairs
# fusion rules allow explicitly (a norm prologue into its matmul; a dataflow layer).
HEAVY_KINDS = frozenset({OpKind.contraction, OpKind.reduction, OpKind.normalization,
                         OpKind.window, OpKind.gather, OpKind.region})


def is_heavy(node: Node) -> bool:
    return get_op(node.op).kind in HEAVY_KINDS


STATISTICS = frozenset({Template.reduce, Template.variance})
"""Reductions that are statistics of their rows; several over the same rows share one loop nest."""


def _rows(node: Node, types) -> tuple[tuple[int, ...], tuple[int, ...]]:
    st = node_structure(node, types)
    return types[node.operands[0]].shape, tuple(i for i, d in enumerate(st.domain) if d.kind is IterKind.reduction)


def statistics_of_same_rows(nodes, types) -> bool:
    """Whether these heavy ops can share one loop nest: each a statistic (a reduction or a
    variance) of the same rows of operands of one shape, as a group norm's chunk mean and
    variance are. A row kernel then loops over the rows once per statistic."""
    if len(nodes) < 2 or not all(get_op(n.op).template in STATISTICS and not n.regions for n in nodes):
        return False
    return len({_rows(n, types) for n in nodes}) == 1


def anchor_of(nodes) -> Node | None:
    """The node whose loop nest a kernel is built around: its contraction if it has one
    (the first: a norm prologue precedes its matmul), else its last heavy op, else None
    (a pure pointwise kernel)."""
    heavy = [n for n in nodes if is_heavy(n)]
    contractions = [n for n in heavy if get_op(n.op).kind is OpKind.contraction]
    if contractions:
        return contractions[0]
    return heavy[-1] if heavy else None


def group_kind(members, layer: bool) -> tuple[str, str | None]:
    """A group's plan `kind` and anchor name from its member nodes (`layer`: it streams as
    one dataflow layer, which has no single anchor)."""
    if layer:
        return LAYER, None
    heavy = [n for n in members if is_heavy(n)]
    anchor = anchor_of(members)
    if anchor is None:
        return "pointwise", None
    op = get_op(anchor.op)
    kind = "attention" if op.template is Template.attention else op.kind.value
    if len(heavy) == 2 and kind == "contraction":
        kind = "norm_contraction"
    return kind, anchor.name


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
        """A readable kernel name from what it fuses, e.g. `linear_gelu` (quiet ops left out)."""
        ops: list[str] = []
        for n in self.nodes:
            if n.op not in ops and not get_op(n.op).has(Trait.quiet):
                ops.append(n.op)
        return "_".join(ops[:4]) + ("_etc" if len(ops) > 4 else "") if ops else self.nodes[0].op


def kernel_anchor(kernel: "Kernel") -> Node | None:
    """The node whose loop nest the kernel's tiles describe: the plan's anchor, else the
    kernel's anchor op, else its largest compute node (None for layout/source only)."""
    anchor_name = kernel.group.plan.anchor if kernel.group is not None else None
    if anchor_name:  # the verifier checks that a group's anchor is one of its nodes
        return next(n for n in kernel.nodes if n.name == anchor_name)
    anchor = anchor_of(kernel.nodes)
    if anchor is not None:
        return anchor
    compute = [n for n in kernel.nodes if get_op(n.op).kind not in (OpKind.layout, OpKind.source)]
    return max(compute, key=lambda n: n.type.numel) if compute else None


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
