"""The IR verifier: every rule a well-formed graph keeps, each error naming its node.

Rules: SSA (each name defined once, before use); ops exist with the right operand count,
known attributes of the right kinds and no missing required ones; the declared type equals
the type the op infers; the structured view's maps have one result per operand dim and
stay inside the operand's shape; regions verify too. All errors are collected, so that a
user who edited a dump sees every problem at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from codesign.ir.affine import bound
from codesign.ir.graph import Graph, Node
from codesign.ir.ops import OpKind, ShapeError, Trait, UnknownOpError, get_op
from codesign.ir.types import TensorType, size_problem


@dataclass(frozen=True)
class Diagnostic:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class VerifyError(ValueError):
    def __init__(self, graph_name: str, diagnostics: list[Diagnostic]):
        self.diagnostics = diagnostics
        lines = "\n".join(f"  {d}" for d in diagnostics)
        super().__init__(f"graph @{graph_name} failed verification ({len(diagnostics)} "
                         f"error{'s' if len(diagnostics) != 1 else ''}):\n{lines}")


def _node_where(graph: Graph, node: Node) -> str:
    loc = f" from {node.loc}" if node.loc else ""
    return f"@{graph.name} %{node.name} ({node.op}{loc})"


def check_node(node: Node, operand_types: list[TensorType]) -> list[str]:
    """Problems with one node given its operands' types (empty when it is well-formed)."""
    try:
        op = get_op(node.op)
    except UnknownOpError as exc:
        return [str(exc)]
    problems = []
    n = len(node.operands)
    if n < op.min_operands or (op.max_operands is not None and n > op.max_operands):
        most = "any number of" if op.max_operands is None else str(op.max_operands)
        problems.append(f"takes {op.min_operands}..{most} operands, got {n}")
    for key, value in node.attrs.items():
        spec = op.attrs.get(key)
        if spec is None:
            known = ", ".join(sorted(op.attrs)) or "none"
            problems.append(f"unknown attribute {key!r} (known: {known})")
        elif not isinstance(value, spec.kinds) or (isinstance(value, bool) and bool not in spec.kinds
                                                     and int in spec.kinds):
            kinds = " or ".join(k.__name__ if k is not type(None) else "none" for k in spec.kinds)
            problems.append(f"attribute {key}={value!r} should be {kinds}")
    for key, spec in op.attrs.items():
        if spec.required and key not in node.attrs:
            problems.append(f"missing required attribute {key!r}")
    if len(node.regions) != op.regions:
        problems.append(f"has {len(node.regions)} regions, expected {op.regions}")
    if problems:
        return problems
    attrs = op.attr_values(node.attrs)
    try:
        inferred = op.infer(operand_types, attrs)
    except ShapeError as exc:
        return [str(exc)]
    except (TypeError, ValueError, ArithmeticError, IndexError) as exc:  # e.g. factor=0, perm=[[0], 1]
        return [f"attributes do not fit {node.op}: {exc}"]
    if inferred is not None and (inferred.shape, inferred.dtype) != (node.type.shape, node.type.dtype):
        return [f"declared type {node.type} but operands give {inferred}"]
    try:
        structure = op.structure(operand_types, node.type, attrs)
    except ShapeError as exc:
        return [str(exc)]
    except (TypeError, ValueError, ArithmeticError, IndexError) as exc:
        return [f"attributes do not fit {node.op}: {exc}"]
    extents = structure.loop_sizes
    if any(s == 0 for s in extents):
        return problems
    for i, (amap, t) in enumerate(zip(structure.operand_maps, operand_types)):
        if amap is None:
            continue
        if len(amap.results) != t.rank:
            problems.append(f"indexing map of operand {i} has {len(amap.results)} results for rank {t.rank}")
            continue
        if op.has(Trait.may_read_outside):  # padding, or another operand's part: reads are guarded
            continue
        for axis, expr in enumerate(amap.results):
            lo, hi = bound(expr, extents)
            if lo < 0 or hi >= t.shape[axis]:
                problems.append(f"indexing map {amap} of operand {i} reads dim {axis} at "
                                f"[{lo}, {hi}], outside its size {t.shape[axis]}")
    return problems


def diagnose(graph: Graph, outer: dict[str, TensorType] | None = None) -> list[Diagnostic]:
    """All verification problems of `graph` (and of its regions).

    `check_node` reads a node's op, attributes, region count, type and operand types, never
    its name, so its answer is kept per such description: each decoder layer after the
    first is checked by lookup (the attributes are described by their `repr`, which tells
    1 from 1.0 and True)."""
    diags: list[Diagnostic] = []
    types: dict[str, TensorType] = {}
    checked: dict[tuple, list[str]] = {}
    for inp in graph.inputs:
        if inp.name in types:
            diags.append(Diagnostic(f"@{graph.name} input %{inp.name}", "defined twice"))
        too_large = size_problem(inp.type.shape, inp.type.dtype)
        if too_large is not None:
            diags.append(Diagnostic(f"@{graph.name} input %{inp.name}", f"{inp.type} is too large: {too_large}"))
        types[inp.name] = inp.type
    for node in graph.nodes:
        where = _node_where(graph, node)
        too_large = size_problem(node.type.shape, node.type.dtype)
        if too_large is not None:
            diags.append(Diagnostic(where, f"{node.type} is too large: {too_large}"))
            types[node.name] = node.type
            continue
        if node.name in types:
            diags.append(Diagnostic(where, f"%{node.name} is already defined (SSA values are defined once)"))
        missing = [o for o in node.operands if o not in types]
        if missing:
            diags.append(Diagnostic(where, "uses " + ", ".join(f"%{o}" for o in missing)
                                    + " before any definition"))
        else:
            operand_types = [types[o] for o in node.operands]
            described = (node.op, repr(sorted(node.attrs.items())), len(node.regions), node.type, *operand_types)
            problems = checked.get(described)
            if problems is None:
                problems = checked[described] = check_node(node, operand_types)
            for problem in problems:
                diags.append(Diagnostic(where, problem))
            try:
                op = get_op(node.op)
            except UnknownOpError:
                op = None
            if op is not None and op.kind is OpKind.region:
                for region in node.regions:
                    diags += diagnose(region)
        types[node.name] = node.type
    diags += _check_groups(graph)
    for out in graph.outputs:
        if out not in types:
            diags.append(Diagnostic(f"@{graph.name} return", f"returns %{out}, which is never defined"))
    if not graph.outputs:
        diags.append(Diagnostic(f"@{graph.name} return", "a graph must return at least one value"))
    return diags


def _check_groups(graph: Graph) -> list[Diagnostic]:
    """Group ids are declared once, each declared group is used, and groups are convex."""
    from codesign.ir.kernels import group_cycle
    diags = []
    declared: set[int] = set()
    for group in graph.groups:
        if group.id in declared:
            diags.append(Diagnostic(f"@{graph.name} group {group.id}", "declared twice"))
        declared.add(group.id)
    used = {n.group for n in graph.nodes if n.group is not None}
    for node in graph.nodes:
        if node.group is not None and node.group not in declared:
            diags.append(Diagnostic(_node_where(graph, node), f"is in group {node.group}, which is not declared"))
    for gid in sorted(declared - used):
        diags.append(Diagnostic(f"@{graph.name} group {gid}", "has no nodes"))
    members = {n.name: n.group for n in graph.nodes}
    for group in graph.groups:
        anchor = group.plan.anchor
        if anchor is not None and members.get(anchor) != group.id:
            diags.append(Diagnostic(f"@{graph.name} group {group.id}",
                                    f"anchor %{anchor} is not a node of this group"))
    if not diags and used:
        cycle = group_cycle(graph)
        if cycle:
            diags.append(Diagnostic(f"@{graph.name}", "fusion groups form a cycle (a group is not convex): "
                                    + " -> ".join(cycle + cycle[:1])))
    return diags


def verify(graph: Graph) -> Graph:
    """Raise `VerifyError` listing every problem; return the graph when it is well-formed."""
    diags = diagnose(graph)
    if diags:
        raise VerifyError(graph.name, diags)
    return graph
