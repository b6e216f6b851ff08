"""Small grouping helpers for the Triton backend (stand-ins until the fusion pass lands).

`fuse_all_pointwise` groups connected pointwise / layout / source nodes into one group
each (an elementwise chain becomes one kernel). `fuse_simple` adds greedy anchors: a
matmul / linear / attention absorbs its single-use pointwise epilogue and its layout /
pointwise prologue, a reduction or norm its pointwise neighbours. Both keep groups convex
(checked with `codesign.ir.kernels.group_cycle`) and return the graph unchanged where
they would not be.
"""

from __future__ import annotations

from codesign.codegen.lowering import is_view
from codesign.codegen.triton.kernels import is_anchor, literal_source, template_of
from codesign.ir.graph import Graph, Group, Node
from codesign.ir.kernels import STATISTICS, group_cycle, statistics_of_same_rows
from codesign.ir.ops import get_op
from codesign.ir.ops.registry import OpKind, Template

CHEAP = (OpKind.pointwise, OpKind.layout, OpKind.source)
ANCHOR_KINDS = {Template.gemm: "contraction", Template.attention: "attention"}  # else "reduction"


def _anchor_kind(node: Node) -> str | None:
    """The group kind `node` anchors, or None when it anchors no Triton kernel."""
    return ANCHOR_KINDS.get(template_of(node), "reduction") if is_anchor(node) else None


def _regroup(graph: Graph, owner: dict[str, int], kinds: dict[int, object], anchors: dict[int, str],
             check: bool = True) -> Graph:
    """`graph` with these groups; `graph` itself when they would not be convex (`check`)."""
    ids = sorted({g for g in owner.values()})
    renumber = {g: i for i, g in enumerate(ids)}
    nodes = [n.with_(group=renumber[owner[n.name]]) if n.name in owner else n.with_(group=None)
             for n in graph.nodes]

    def attrs(g):
        if isinstance(kinds[g], dict):
            return kinds[g]
        return {"kind": kinds[g], **({"anchor": anchors[g]} if g in anchors else {})}
    groups = tuple(Group(renumber[g], attrs(g)) for g in ids)
    out = Graph(graph.name, graph.inputs, tuple(nodes), graph.outputs, groups)
    return graph if check and group_cycle(out) else out


def stages(graph: Graph, barrier) -> dict[str, int]:
    """Per node, how many `barrier` nodes (kernels of their own: externs, anchors) the longest
    path from the inputs to it passes. Cheap nodes of one stage joined along their edges form
    a convex group: a path that left the group and came back would pass a barrier, and so
    end at a later stage."""
    stage: dict[str, int] = {}
    nodes = graph.node_map()
    for n in graph.nodes:
        stage[n.name] = max((stage[o] + (1 if barrier(nodes[o]) else 0) for o in n.operands if o in stage),
                            default=0)
    return stage


def fuse_all_pointwise(graph: Graph, stage: dict[str, int] | None = None) -> Graph:
    """Every connected set of pointwise / layout / source nodes becomes one group. Where that
    closes a cycle through a kernel of its own (a layout op read by an extern conv and by
    later pointwise nodes), only nodes of one stage are joined (`stages` with every other
    node a barrier), which keeps every group convex.

    `stage` is given when `graph` holds only some of the nodes (the rest in kernels of their
    own, computed on the whole graph): a cycle through those would not show in `graph`, so
    only nodes of one stage are joined from the start. Two norms reading one shared epsilon
    constant are then two groups, not one across the model."""
    cheap = {n.name for n in graph.nodes if get_op(n.op).kind in CHEAP}
    if stage is not None:
        return _join(graph, cheap, stage)
    out = _join(graph, cheap, None)
    if out is graph and group_cycle(_join(graph, cheap, None, check=False)):
        out = _join(graph, cheap, stages(graph, lambda n: n.name not in cheap))
    return out


def _join(graph: Graph, cheap: set[str], stage: dict[str, int] | None, check: bool = True) -> Graph:
    parent = {name: name for name in cheap}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x
    for n in graph.nodes:
        if n.name in parent:
            for o in n.operands:
                if o in parent and (stage is None or stage.get(o) == stage.get(n.name)):
                    parent[find(o)] = find(n.name)
    roots: dict[str, int] = {}
    owner = {}
    for n in graph.nodes:
        if n.name in parent:
            owner[n.name] = roots.setdefault(find(n.name), len(roots))
    sizes: dict[int, int] = {}
    for g in owner.values():
        sizes[g] = sizes.get(g, 0) + 1
    owner = {k: g for k, g in owner.items() if sizes[g] > 1}
    return _regroup(graph, owner, {g: "pointwise" for g in owner.values()}, {}, check)


NEARBY = 64  # how far apart (in nodes) two statistics may be to share a kernel


def _statistic_partner(node: Node, earlier: list[str], owner: dict[str, int], nodes: dict[str, Node],
                       position: dict[str, int], types) -> str | None:
    """An earlier statistic whose row kernel `node` can join: of the same rows
    (`statistics_of_same_rows`), close by, and independent of every statistic already in that
    kernel — no path from one to the other, so the joined group stays convex."""
    if template_of(node) not in STATISTICS:
        return None
    for name in reversed(earlier[-8:]):
        if position[node.name] - position[name] > NEARBY:
            break
        members = [m for m in earlier if owner.get(m) == owner[name]]
        if statistics_of_same_rows([nodes[name], node], types) \
                and not any(_reaches(node, m, nodes, position) for m in members):
            return name
    return None


def _reaches(node: Node, ancestor: str, nodes: dict[str, Node], position: dict[str, int]) -> bool:
    """Whether `node` depends on `ancestor` (only nodes after the ancestor are searched)."""
    stop, seen, todo = position[ancestor], set(), [node.name]
    while todo:
        for o in nodes[todo.pop()].operands:
            if o == ancestor:
                return True
            if o in nodes and o not in seen and position[o] > stop:
                seen.add(o)
                todo.append(o)
    return False


def fuse_simple(graph: Graph, keep_groups: bool = False, share_statistics: bool = True) -> Graph:
    """Greedy anchor fusion: epilogues into matmul / attention / norms, prologues of
    layout and pointwise nodes into their only consumer's group, pointwise chains together,
    independent statistics of the same rows into one row kernel (`share_statistics`; where
    that would make some group not convex, the grouping is redone without it).
    With `keep_groups`, existing groups stay as they are and only ungrouped nodes are grouped."""
    users = graph.users()
    nodes = graph.node_map()
    types = graph.types()
    position = {n.name: i for i, n in enumerate(graph.nodes)}
    owner: dict[str, int] = {}
    kinds: dict[int, object] = {}
    anchors: dict[int, str] = {}
    next_id = 0
    if keep_groups:
        existing = graph.group_map()
        for n in graph.nodes:
            if n.group is not None:
                owner[n.name] = n.group
                kinds[n.group] = dict(existing[n.group].attrs) if n.group in existing else {"kind": "pointwise"}
        next_id = max(kinds, default=-1) + 1
    statistics: list[str] = []  # the row statistics anchored so far: a later one may share their kernel
    shared = False
    for n in graph.nodes:
        if _anchor_kind(n) is not None and n.name not in owner:
            partner = _statistic_partner(n, statistics, owner, nodes, position, types) if share_statistics else None
            if template_of(n) in STATISTICS:
                statistics.append(n.name)
            if partner is not None:
                owner[n.name] = owner[partner]
                shared = True
                continue
            owner[n.name], kinds[next_id], anchors[next_id] = next_id, _anchor_kind(n), n.name
            next_id += 1
    # epilogues: later pointwise / reshape nodes of the anchor's size that read the group
    # and otherwise only values defined before the anchor (so the group stays convex)
    inputs = {i.name for i in graph.inputs}
    for name, g in list(owner.items()):
        anchor = nodes[name]
        if anchors.get(g) != name or template_of(anchor) in (Template.reduce, Template.variance):
            continue
        first = position[name]
        members = {name}
        for n in graph.nodes[first + 1:first + 80]:
            if n.name in owner or n.type.numel != anchor.type.numel:
                continue
            if get_op(n.op).kind is not OpKind.pointwise and not is_view(n, types):
                continue
            if not any(o in members for o in n.operands):
                continue
            if all(o in members or o in inputs or (o in nodes and (literal_source(nodes[o]) is not None
                                                                    or position[o] < first))
                   for o in n.operands):
                owner[n.name] = g
                members.add(n.name)
    # prologues: cheap producers whose every user is in one group join it
    changed = True
    while changed:
        changed = False
        for n in reversed(graph.nodes):
            if n.name in owner or get_op(n.op).kind not in CHEAP or n.name in graph.outputs:
                continue
            gs = {owner.get(u.name) for u in users.get(n.name, [])}
            if len(gs) == 1 and None not in gs:
                owner[n.name] = gs.pop()
                changed = True
    # a pointwise producer of a norm joins its group as an extra output (add + layer_norm)
    for name, g in list(owner.items()):
        n = nodes[name]
        if anchors.get(g) != name or template_of(n) not in (Template.norm, Template.softmax):
            continue
        p = nodes.get(n.operands[0])
        if p is not None and p.name not in owner and get_op(p.op).kind is OpKind.pointwise \
                and p.type.shape == n.type.shape:
            owner[p.name] = g
    # the rest: pointwise islands (stages counted with this function's groups as barriers)
    free = Graph(graph.name, graph.inputs, tuple(n.with_(group=None) for n in graph.nodes if n.name not in owner),
                 graph.outputs)
    grouped = set(owner)
    rest = fuse_all_pointwise(free, stages(graph, lambda n: n.name in grouped or get_op(n.op).kind not in CHEAP))
    for n in rest.nodes:
        if n.name not in owner and n.group is not None:
            g = next_id + n.group
            owner[n.name] = g
            kinds[g] = "pointwise"
    out = _regroup(graph, owner, kinds, anchors)
    if out is graph and shared:
        return fuse_simple(graph, keep_groups, share_statistics=False)
    return out

