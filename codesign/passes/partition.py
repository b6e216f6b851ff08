"""The partition pass: regroup the IR by a backend's kernel rules, before code generation.

`fuse` forms groups for the target's cost model; a backend may not run every such group as
one kernel. A Triton kernel is one template built around one heavy anchor, so a streamed
dataflow layer, a norm fused into its matmul, or a group holding a convolution is more than
one kernel there. `partition{backend=triton}` is that regrouping, as a pass: the IR after it
is what runs, and the ledger says why each group was split and each node moved (subject:
the group or node, as in the pass's input; choice: split, formed, grew, moved, dissolved;
the rule and what the nodes became in `data`):

1. `one-anchor`: a group with several heavy anchors (`PartitionRules.anchor`) is dissolved
   and its nodes regrouped by the backend (`PartitionRules.regroup`), one anchor each (the
   regrouping also groups nodes that were in no group);
2. `sink-layout`: a group's trailing layout op (a reshape, slice or permute of its result)
   read by one other group only moves there, where it folds into the loads;
3. `no-template` / `template`: a group with a node the backend has no template for, or one
   its templates cannot express (`PartitionRules.check` says why), splits into the
   backend's regrouping of its nodes — or into lone nodes when that gives the group back;
4. `lone-producer`: a pointwise or layout node a split left alone (a cast fused after an
   extern conv), or a group of such nodes only (a weight's cast and reshape), joins the one
   group that reads it, when all it reads precedes that group and
   the backend can still run the group;
   `bias-epilogue` (where the backend asks for it, `PartitionRules.bias_in_readers`:
   Triton): an extern conv whose every reader is in a generated group runs without its
   bias, and each reading group adds it as it loads the conv's result (new nodes in those
   groups; a group the backend then cannot run keeps the bias where it was);
5. `constant`: a group of literal constants only is dissolved (each reader computes the
   literal in place);
6. `library`: on a calibrated target, a kernel of one op whose template the backend can hand
   to the vendor library (`PartitionRules.library`: a GEMM on Triton) runs there when the
   calibrated model predicts the library faster by more than 10% (a skinny GEMM: cuBLAS
   splits K, one generated tile per SM cannot); both predicted times are in the ledger, and
   the group's plan says `implementation = "library"`.

Groups that keep their nodes keep their id and plan; new groups get ids after the largest
id of the input, and the backend's plan (kind, anchor: no tiles). A backend without rules
(`Backend.partition_rules` is None: cpp, iree, the interpreter) runs every convex group as
one kernel, and the pass is the identity for it. `backend=auto` (the default) means the
target's `host_backend`. `CompiledModule` runs `partition{backend=<the backend chosen>}`
before code generation (`CompiledModule.graph_for`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, ClassVar

from codesign.ir.graph import Graph, Group, Node
from codesign.ir.kernels import Kernel, group_kind, kernels
from codesign.ir.ops import OpKind, Template, get_op, node_structure
from codesign.ir.plan import GroupPlan
from codesign.ir.scalar import Lit
from codesign.passes.manager import PassContext
from codesign.passes.registry import Pass, PipelineError, register_pass

Record = Callable[..., object]


@register_pass
@dataclass(frozen=True)
class Partition(Pass):
    """Regroup kernels by a backend's rules (the identity for a backend without any)."""

    name: ClassVar[str] = "partition"
    summary: ClassVar[str] = ("regroup kernels by a backend's rules (triton: one template and one heavy anchor "
                              "per kernel); every split and move recorded in the ledger")
    backend: str = field(default="auto", metadata={
        "doc": "the backend whose kernels the groups must be (triton, cpp, ...); auto: the target's host_backend"})

    def __post_init__(self) -> None:
        from codesign.codegen.registry import get_backend
        if self.backend != "auto":
            get_backend(self.backend)  # an unknown name is a ValueError naming the closest ones

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        from codesign.codegen.registry import get_backend
        backend = self.backend
        if backend == "auto":
            if ctx.target is None:
                raise PipelineError("partition{backend=auto} regroups for the target's host_backend: pass "
                                    "--target, or name the backend (partition{backend=triton})")
            backend = ctx.target.host_backend
        rules = get_backend(backend).partition_rules(ctx.target)
        if rules is None:
            return graph

        def record(subject: str, choice: str, reason: str, **data) -> None:
            ctx.ledger.record(self.name, subject, choice, reason, backend=backend, **data)
        return partition(graph, rules, record, backend, ctx.target)


def partition(graph: Graph, rules, record: Record | None = None, backend: str = "the backend",
              target=None) -> Graph:
    """`graph` regrouped by `rules` (a `codesign.codegen.registry.PartitionRules`); each
    decision goes to `record(subject, choice, reason, **data)` when given."""
    record = record or (lambda *a, **k: None)
    fresh = _Ids(max((g.id for g in graph.groups), default=-1) + 1)
    graph = _split_anchors(graph, rules, record, fresh, backend)
    if rules.sink_layout:
        graph = _sink_layout_ops(graph, rules, record)
    graph = _split_unrunnable(graph, rules, record, fresh, backend)
    graph = _join_lone_producers(graph, rules, record)
    if rules.bias_in_readers:
        graph = _bias_into_readers(graph, rules, record)
    if rules.inline_literals:
        graph = _dissolve_constant_groups(graph, record)
    if rules.library and target is not None and target.calibration is not None:
        graph = _choose_library(graph, rules, record, fresh, target)
    return graph


LIBRARY_MARGIN = 0.9  # the library must be predicted at least 10% faster to be chosen


def _choose_library(graph: Graph, rules, record: Record, fresh: _Ids, target) -> Graph:
    """Kernels of one library-capable op: generated or vendor library, by predicted time."""
    from codesign.cost.model import CostModel, calibrated_time
    model = CostModel(target)
    efficiency = target.calibration.efficiency
    types = graph.types()
    assign = {n.name: n.group for n in graph.nodes}
    plans = {g.id: g.plan for g in graph.groups}
    changed = False
    for kernel in kernels(graph):
        if len(kernel.nodes) != 1 or get_op(kernel.nodes[0].op).template not in rules.library:
            continue
        node = kernel.nodes[0]
        features = model.features(kernel, types)
        generated = calibrated_time(features, target, efficiency)[0]
        library = calibrated_time(features, target, efficiency, vendor=True)[0]
        times = {"generated_s": generated, "library_s": library}
        if library >= LIBRARY_MARGIN * generated:
            record(f"%{node.name}", "generated", f"generated kernel predicted {generated * 1e6:.1f} us, the "
                   f"vendor library {library * 1e6:.1f} us", rule="library", **times)
            continue
        group = node.group if node.group is not None else fresh()
        kind, anchor = group_kind([node], False)
        base = plans.get(group, GroupPlan(kind=kind, anchor=anchor))
        plans[group] = dataclasses.replace(base, implementation="library")
        assign[node.name] = group
        changed = True
        record(f"%{node.name}", "library", f"the vendor library predicted {library * 1e6:.1f} us, the "
               f"generated kernel {generated * 1e6:.1f} us", rule="library", group=group, **times)
    return _regrouped(graph, assign, plans) if changed else graph


class _Ids:
    def __init__(self, first: int):
        self.next = first

    def __call__(self) -> int:
        self.next += 1
        return self.next - 1


def _names(nodes) -> list[str]:
    return [n.name for n in nodes]


def _regrouped(graph: Graph, assign: dict[str, int | None], plans: dict[int, GroupPlan],
               order: list[str] | None = None) -> Graph:
    """`graph` with node `n` in group `assign[n]`, the used groups declared (by id) with their
    plans, and the nodes in `order` when given."""
    nodes = graph.node_map()
    sequence = [nodes[n] for n in order] if order is not None else list(graph.nodes)
    new_nodes = tuple(n.with_(group=assign.get(n.name)) for n in sequence)
    used = sorted({g for g in assign.values() if g is not None})
    return Graph(graph.name, graph.inputs, new_nodes, graph.outputs, tuple(Group(g, plans[g]) for g in used))


def _parts_of(graph: Graph, names: set[str]) -> list[dict]:
    """Where the nodes `names` are in `graph`: one entry per kernel (group id or None)."""
    parts: dict[object, dict] = {}
    for n in graph.nodes:
        if n.name in names:
            key = n.group if n.group is not None else ("lone", n.name)
            parts.setdefault(key, {"group": n.group, "nodes": []})["nodes"].append(n.name)
    return list(parts.values())


def _describe(parts: list[dict]) -> str:
    return "; ".join((f"group {p['group']}: " if p["group"] is not None else "alone: ")
                     + ", ".join("%" + n for n in p["nodes"][:5]) + (" ..." if len(p["nodes"]) > 5 else "")
                     for p in parts)


def _keep_ids(before: Graph, after: Graph, fresh: _Ids) -> Graph:
    """`after` (a regrouping of `before`) with every group that holds all of a group of
    `before` back at that group's id and plan, and the other groups at fresh ids."""
    old_of = {n.name: n.group for n in before.nodes}
    old_plans = before.group_map()
    members: dict[int, list[str]] = {}
    for n in after.nodes:
        if n.group is not None:
            members.setdefault(n.group, []).append(n.name)
    old_members: dict[int, set[str]] = {}
    for n in before.nodes:
        if n.group is not None:
            old_members.setdefault(n.group, set()).add(n.name)
    new_id: dict[int, int] = {}
    plans: dict[int, GroupPlan] = {}
    after_plans = after.group_map()
    for g in members:  # in order of first member
        olds = {old_of[m] for m in members[g]} - {None}
        kept = [o for o in olds if old_members[o] <= set(members[g])]
        if len(kept) == 1:
            new_id[g] = kept[0]
            plans[kept[0]] = old_plans[kept[0]].plan
        else:
            new_id[g] = fresh()
            plans[new_id[g]] = after_plans[g].plan
    assign = {n.name: new_id[n.group] if n.group is not None else None for n in after.nodes}
    return _regrouped(after, assign, plans)


def _record_regrouping(before: Graph, after: Graph, record: Record, rule: str, reasons: dict[int, str]) -> None:
    """Ledger entries for `after`, a regrouping of `before` with the same ids for kept groups:
    each group of `before` in `reasons` split, each new group formed, each kept group grown."""
    members_before: dict[int, list[str]] = {}
    for n in before.nodes:
        if n.group is not None:
            members_before.setdefault(n.group, []).append(n.name)
    origin = {n.name: n.group for n in before.nodes}
    for gid, reason in reasons.items():
        parts = _parts_of(after, set(members_before[gid]))
        record(f"group {gid}", "split", f"rule '{rule}': {reason}; now {_describe(parts)}",
               rule=rule, parts=parts)
    members_after: dict[int, list[str]] = {}
    for n in after.nodes:
        if n.group is not None:
            members_after.setdefault(n.group, []).append(n.name)
    plans = after.group_map()
    for gid, names in members_after.items():
        came = [m for m in names if origin[m] != gid]
        if not came:
            continue
        sources = sorted({"ungrouped" if origin[m] is None else f"group {origin[m]}" for m in came})
        anchor = plans[gid].plan.anchor
        around = f" around %{anchor}" if anchor else ""
        if gid in members_before:
            record(f"group {gid}", "grew", f"rule '{rule}': the backend's regrouping added "
                   f"{', '.join('%' + m for m in came[:5])} (from {', '.join(sources)}){around}",
                   rule=rule, nodes=came, sources=sources)
        else:
            record(f"group {gid}", "formed", f"rule '{rule}': the backend's regrouping made a kernel of "
                   f"{', '.join('%' + m for m in names[:5])}{' ...' if len(names) > 5 else ''}"
                   f" (from {', '.join(sources)}){around}", rule=rule, nodes=names, sources=sources)


# -- 1. one heavy anchor per kernel --------------------------------------------------------------
def _split_anchors(graph: Graph, rules, record: Record, fresh: _Ids, backend: str) -> Graph:
    anchors: dict[int, list[Node]] = {}
    for n in graph.nodes:
        if n.group is not None and rules.anchor(n):
            anchors.setdefault(n.group, []).append(n)
    types = graph.types()
    big = {g: [n.name for n in nodes] for g, nodes in anchors.items()
           if len(nodes) > 1 and not rules.shared_anchors(nodes, types)}
    if not big:
        return graph
    dissolved = Graph(graph.name, graph.inputs, tuple(n.with_(group=None) if n.group in big else n for n in graph.nodes),
                      graph.outputs, tuple(g for g in graph.groups if g.id not in big))
    result = _keep_ids(dissolved, rules.regroup(dissolved), fresh)
    reasons = {g: f"{len(names)} heavy anchors ({', '.join('%' + a for a in names[:4])}"
                  f"{' ...' if len(names) > 4 else ''}); a {backend} kernel is built around one"
               for g, names in sorted(big.items())}
    _record_regrouping(graph, result, record, "one-anchor", reasons)
    return result


# -- 2. trailing layout ops into their reader --------------------------------------------------------
def _sink_layout_ops(graph: Graph, rules, record: Record) -> Graph:
    """Move a group's trailing layout ops (slice, reshape, permute of its result) into the one
    group that reads them. A layout op is an index map: in the consumer it folds into the
    loads for free, while in the producer it would be an extra output of another shape
    (the q/k/v split after a fused QKV projection) that a matmul template cannot store.
    One read by a node without a template (an extern conv) stays: no load folds it there."""
    users = graph.users()
    group_of = {n.name: n.group for n in graph.nodes}
    outputs = set(graph.outputs)
    moves: dict[str, tuple[int, int]] = {}
    changed = True
    while changed:
        changed = False
        for n in reversed(graph.nodes):
            g = group_of[n.name]
            if g is None or n.name in outputs or get_op(n.op).kind is not OpKind.layout:
                continue
            readers = {group_of[u.name] for u in users.get(n.name, [])}
            if any(rules.template_of(u) is None for u in users.get(n.name, [])):
                continue
            if len(readers) == 1 and None not in readers and readers != {g}:
                group_of[n.name] = readers.pop()
                moves[n.name] = (moves.get(n.name, (g,))[0], group_of[n.name])
                changed = True
    if not moves:
        return graph
    nodes = graph.node_map()
    position = {n.name: i for i, n in enumerate(graph.nodes)}
    for name, (src, dst) in sorted(moves.items(), key=lambda kv: position[kv[0]]):
        record(f"%{name}", "moved", f"rule 'sink-layout': {nodes[name].op} of group {src}'s result, read by "
               f"group {dst} only, folds into that group's loads", rule="sink-layout", source=src, into=dst)
    plans = {g.id: g.plan for g in graph.groups}
    for g in sorted({src for src, _ in moves.values()} - set(group_of.values())):
        record(f"group {g}", "dissolved", "rule 'sink-layout': every node moved into its reader's group",
               rule="sink-layout")
    return _regrouped(graph, group_of, plans)


# -- 3. groups no template runs as one kernel -----------------------------------------------------
def _lone(graph: Graph, node: Node, users: dict) -> Kernel:
    outputs = (node.name,) if users.get(node.name) or node.name in graph.outputs else ()
    return Kernel(f"%{node.name}", None, (node,), tuple(dict.fromkeys(node.operands)), outputs)


def _split_unrunnable(graph: Graph, rules, record: Record, fresh: _Ids, backend: str) -> Graph:
    """Each group the backend cannot run as one kernel, split into the backend's regrouping
    of its nodes (computed on the whole graph ungrouped), or into lone nodes when that gives
    the group back; a part that fails again splits the same way."""
    users = graph.users()
    regrouped: list[Graph] = []
    units: list[tuple[Kernel, int | None, GroupPlan | None]] = []  # kernel, its group id, its plan
    changed = False

    def ungrouped_regrouping() -> Graph:
        if not regrouped:
            bare = Graph(graph.name, graph.inputs, tuple(n.with_(group=None) for n in graph.nodes), graph.outputs)
            regrouped.append(rules.regroup(bare))
        return regrouped[0]

    def parts(kernel: Kernel) -> list[Kernel]:
        lone = [_lone(graph, n, users) for n in kernel.nodes]
        members = {n.name for n in kernel.nodes}
        sub = ungrouped_regrouping()
        mine = {n.name: n.group for n in sub.nodes if n.name in members}
        pieces: dict[object, list[Node]] = {}
        for n in kernel.nodes:
            pieces.setdefault(mine[n.name] if mine[n.name] is not None else ("lone", n.name), []).append(n)
        if any(len(p) == len(kernel.nodes) for p in pieces.values()):
            return lone
        out = []
        for k in kernels(sub):
            part = [n for n in k.nodes if n.name in members]
            if not part:
                continue
            inside = {n.name for n in part}
            inputs = tuple(dict.fromkeys(o for n in part for o in n.operands if o not in inside))
            outputs = tuple(n.name for n in part if n.name in graph.outputs
                            or any(u.name not in inside for u in users.get(n.name, [])))
            group = sub.group_map().get(part[0].group) if len(part) > 1 else None
            if group is not None and group.plan.anchor not in inside:  # the anchor is in another part
                kind, anchor = group_kind(part, False)
                group = Group(group.id, GroupPlan(kind=kind, anchor=anchor))
            out.append(Kernel(k.key + "'", group, tuple(part), inputs, outputs))
        return out

    def lower(kernel: Kernel, gid: int | None) -> None:
        nonlocal changed
        if not kernel.outputs or len(kernel.nodes) == 1:
            units.append((kernel, gid, kernel.group.plan if kernel.group is not None and gid is not None else None))
            return
        extern = [n for n in kernel.nodes if rules.template_of(n) is None]
        rule = "no-template" if extern else "template"
        why = f"{extern[0].op} has no {backend} template" if extern else rules.check(graph, kernel)
        if why is None:
            units.append((kernel, gid, kernel.group.plan))
            return
        changed = True
        split = [(p, fresh() if p.group is not None else None) for p in parts(kernel)]
        described = [{"group": pid, "nodes": _names(p.nodes)} for p, pid in split]
        record(f"group {gid}", "split", f"rule '{rule}': {why}; now {_describe(described)}",
               rule=rule, detail=why, parts=described)
        for p, pid in split:
            if pid is not None:
                record(f"group {pid}", "formed", f"rule '{rule}': the backend's regrouping of group {gid}'s nodes "
                       f"{', '.join('%' + n for n in _names(p.nodes)[:5])}", rule=rule, nodes=_names(p.nodes),
                       sources=[f"group {gid}"])
            lower(p, pid)

    for k in kernels(graph):
        lower(k, k.group.id if k.group is not None else None)
    if not changed:
        return graph
    assign: dict[str, int | None] = {}
    plans: dict[int, GroupPlan] = {}
    for kernel, gid, plan in units:
        for n in kernel.nodes:
            assign[n.name] = gid
        if gid is not None:
            plans[gid] = plan
    result = _regrouped(graph, assign, plans)
    order = [n.name for kernel, _, _ in units for n in kernel.nodes]
    if [n.name for k in kernels(result) for n in k.nodes] != order:  # run the parts where the group ran
        result = _regrouped(graph, assign, plans, order)
    return result


# -- 3b. lone cheap producers into their one reader ---------------------------------------------------
def _join_lone_producers(graph: Graph, rules, record: Record) -> Graph:
    """A pointwise or layout node left alone by a split (a cast fused after an extern conv,
    read by the normalisation that follows) — or a group of such nodes only (a weight's cast
    and reshape) — joins the one group that reads it, when everything it reads precedes that
    group's first node — nothing it reads can then depend on the group, so the group stays
    convex — and the backend can still run the group. Alone it would be a kernel writing its
    result to memory for one reader."""
    users = graph.users()
    position = {n.name: i for i, n in enumerate(graph.nodes)}
    first: dict[int, int] = {}
    members: dict[int, list[Node]] = {}
    for n in graph.nodes:
        if n.group is not None:
            first.setdefault(n.group, position[n.name])
            members.setdefault(n.group, []).append(n)
    units = [[n] for n in graph.nodes if n.group is None] + list(members.values())
    units.sort(key=lambda unit: -position[unit[-1].name])
    joins: dict[str, int] = {}
    for unit in units:
        names = {n.name for n in unit}
        if any(n.name in graph.outputs or get_op(n.op).kind not in (OpKind.pointwise, OpKind.layout)
               or rules.template_of(n) is None or rules.anchor(n) for n in unit):
            continue
        readers = {joins.get(u.name, u.group) for n in unit for u in users.get(n.name, []) if u.name not in names}
        if len(readers) != 1 or None in readers or readers == {unit[0].group}:
            continue
        g = readers.pop()
        reads = {o for n in unit for o in n.operands if o not in names}
        if _recomputes_arithmetic(unit, names, users, members.get(g, [])):
            continue
        if all(position.get(o, -1) < first[g] for o in reads):
            joins.update({n.name: g for n in unit})
            first[g] = min(first[g], position[unit[0].name])
    if not joins:
        return graph

    def joined_graph(joins: dict[str, int]) -> Graph:
        nodes = tuple(n.with_(group=joins.get(n.name, n.group)) for n in graph.nodes)
        used = {n.group for n in nodes}
        return Graph(graph.name, graph.inputs, nodes, graph.outputs, tuple(g for g in graph.groups if g.id in used))
    joined = joined_graph(joins)
    targets = set(joins.values())
    refused = {k.group.id for k in kernels(joined) if k.group is not None and k.group.id in targets
               and rules.check(joined, k) is not None}
    if refused:
        joins = {n: g for n, g in joins.items() if g not in refused}
        joined = joined_graph(joins)
    old_group = {n.name: n.group for n in graph.nodes}
    for name, g in joins.items():
        was = f"group {old_group[name]}" if old_group[name] is not None else "alone"
        record(f"%{name}", "moved", f"{was}, and read only by group {g}: it joins it (no kernel writing it "
               "to memory)", rule="lone-producer", group=g)
    return joined


def _recomputes_arithmetic(unit: list[Node], names: set[str], users, group: list[Node]) -> bool:
    """Whether joining `unit` into `group` would compute its arithmetic more than once per
    element: a value smaller than the group's largest is read broadcast, so only casts and
    layout ops (free in the loads) may be recomputed that way."""
    largest = max((n.type.numel for n in group), default=0)
    smaller = any(n.type.numel < largest for n in unit if any(u.name not in names for u in users.get(n.name, [])))
    return smaller and any(get_op(n.op).kind is not OpKind.layout and get_op(n.op) is not CAST for n in unit)


CAST = get_op("cast")


# -- 3c. an extern conv's bias into the kernels that read it -------------------------------------------
def _bias_into_readers(graph: Graph, rules, record: Record) -> Graph:
    """An extern conv with a bias whose every reader is in a generated group runs without
    the bias; each reading group adds it (a broadcast add, computed as it loads the conv's
    result). The library's bias is a separate pass over the whole output (cuDNN then torch's
    add: 1.5 ms of SD-VAE's decoder on an H200); in the readers it costs nothing. A group the
    backend then cannot run keeps its conv's bias as before."""
    def eligible(n: Node, users) -> bool:
        readers = users.get(n.name, [])
        return (get_op(n.op).template is Template.conv and rules.template_of(n) is None and len(n.operands) == 3
                and n.name not in graph.outputs and bool(readers)
                and all(u.group is not None and rules.template_of(u) is not None for u in readers))
    users = graph.users()
    convs = {n.name for n in graph.nodes if eligible(n, users)}
    if not convs:
        return graph
    rewritten, groups = _without_bias(graph, convs, users)
    kernels_by_group = {k.group.id: k for k in kernels(rewritten) if k.group is not None}
    refused = {g for g in set().union(*groups.values()) if rules.check(rewritten, kernels_by_group[g]) is not None}
    if refused:
        convs = {c for c in convs if not groups[c] & refused}
        if not convs:
            return graph
        rewritten, groups = _without_bias(graph, convs, users)
    for n in graph.nodes:
        if n.name in convs:
            record(f"%{n.name}", "moved", f"its bias is added by the {len(groups[n.name])} kernel(s) that read it "
                   "(no separate pass over the output)", rule="bias-epilogue", groups=sorted(groups[n.name]))
    return rewritten


def _without_bias(graph: Graph, convs: set[str], users) -> tuple[Graph, dict[str, set[int]]]:
    """`graph` with the convs `convs` bias-free and their bias added in each reading group."""
    from codesign.ir.builder import GraphBuilder
    b = GraphBuilder(graph.name, list(graph.inputs), [], dict(graph.types()))
    biased: dict[tuple[str, int], str] = {}  # (conv, reader group) → the biased value
    groups: dict[str, set[int]] = {}
    for n in graph.nodes:
        if n.name in convs:
            x, w, bias = n.operands
            st = node_structure(n, b.types)
            axis = st.result_map.results.index(st.operand_maps[2].results[0])  # the channel dim
            b.nodes.append(n.with_(operands=(x, w)))  # same name, group and plan: only the bias leaves
            shape = (b.types[bias].shape[0],) + (1,) * (n.type.rank - 1 - axis)
            groups[n.name] = {u.group for u in users[n.name]}
            for g in sorted(groups[n.name]):
                per = bias
                if len(shape) > 1:  # NCHW: the channel is not the last dim
                    per = b.reshape(bias, shape)
                    b.nodes[-1] = b.nodes[-1].with_(group=g)
                biased[n.name, g] = b.add("add", [n.name, per], hint=f"{n.name}.biased")
                b.nodes[-1] = b.nodes[-1].with_(group=g, loc=n.loc)
            continue
        operands = tuple(biased.get((o, n.group), o) for o in n.operands)
        b.nodes.append(n if operands == n.operands else n.with_(operands=operands))
    return Graph(graph.name, graph.inputs, tuple(b.nodes), graph.outputs, graph.groups), groups


# -- 4. groups of constants -------------------------------------------------------------------------
def _literal(node: Node) -> bool:
    op = get_op(node.op)
    if op.kind is not OpKind.source or node.operands:
        return False
    expr = op.structure([], node.type, op.attr_values(node.attrs)).expr
    return isinstance(expr, Lit)


def _dissolve_constant_groups(graph: Graph, record: Record) -> Graph:
    members: dict[int, list[Node]] = {}
    for n in graph.nodes:
        if n.group is not None:
            members.setdefault(n.group, []).append(n)
    constant = {g for g, nodes in members.items() if all(_literal(n) for n in nodes)}
    if not constant:
        return graph
    for g in sorted(constant):
        record(f"group {g}", "dissolved", "rule 'constant': literal constants only; each reader computes "
               "them in place", rule="constant", nodes=_names(members[g]))
    assign = {n.name: None if n.group in constant else n.group for n in graph.nodes}
    return _regrouped(graph, assign, {g.id: g.plan for g in graph.groups})


__all__ = ["Partition", "partition"]
