"""Fusion legality: may two groups become one kernel? Correctness only, never cost.

Each rule has a name that the decision ledger records when it refuses, so "why was this
not fused?" always has an answer. Rules:

- `region-op`: an MoE node stays alone (the expert scheduler moves its weights).
- `cycle`: merging would make a path leave the group and come back (not convex).
- `two-anchors`: a kernel has one main loop nest (contraction, reduction, norm, pool,
  gather); allowed are a norm prologue feeding a matmul along its contraction dim
  (`norm-prologue`), which the matmul reads whole rows of, and statistics of the same rows
  (`same-rows`: a mean and a variance, one pass over the rows each).
- `iteration-space`: every other node must run over the anchor's iteration space: its
  result, its input (a persistent reduction keeps the row on chip), or one of its operands
  (a prologue); a pure pointwise group runs over its largest node, others must divide it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from codesign.fusion.partition import Partition, anchor_of, is_heavy
from codesign.ir.graph import Node
from codesign.ir.kernels import statistics_of_same_rows
from codesign.ir.ops import OpKind, Template, get_op
from codesign.ir.types import TensorType


@dataclass(frozen=True)
class Verdict:
    legal: bool
    rule: str
    detail: str = ""


LEGAL = Verdict(True, "legal")


def _norm_prologue(norm: Node, contraction: Node, nodes: dict[str, Node], types: dict[str, TensorType]) -> bool:
    """The norm reaches the contraction's data operand through layout ops only, and it
    normalises exactly the contraction dim (the matmul reads whole normalised rows)."""
    if get_op(norm.op).template not in (Template.norm, Template.group_norm):
        return False
    if get_op(contraction.op).template is not Template.gemm:
        return False
    value = contraction.operands[0]
    while value != norm.name:
        producer = nodes.get(value)
        if producer is None or get_op(producer.op).kind is not OpKind.layout:
            return False
        value = producer.operands[0]
    k = types[contraction.operands[0]].shape[-1]
    normalized = norm.attrs.get("normalized_rank", 1)
    return normalized == 1 and norm.type.shape[-1] == k


def check_anchors(members: Sequence[Node], types: dict[str, TensorType], nodes: dict[str, Node]) -> Verdict:
    return _check_heavy([n for n in members if is_heavy(n)], len(members), types, nodes)


def _check_heavy(heavy: Sequence[Node], count: int, types: dict[str, TensorType], nodes: dict[str, Node]) -> Verdict:
    """`check_anchors` from a group's heavy members (graph order) and its size."""
    if any(get_op(n.op).template is Template.moe for n in heavy) and count > 1:
        return Verdict(False, "region-op", "an moe node stays alone: the expert scheduler moves its weights")
    if len(heavy) <= 1:
        return LEGAL
    if len(heavy) == 2:
        a, b = heavy
        if _norm_prologue(a, b, nodes, types):
            return Verdict(True, "norm-prologue")
    if statistics_of_same_rows(heavy, types):
        return Verdict(True, "same-rows")
    names = ", ".join(f"%{n.name} ({n.op})" for n in heavy)
    return Verdict(False, "two-anchors", f"a kernel has one main loop nest; this one would have {names}")


def check_iteration_space(members: Sequence[Node], types: dict[str, TensorType]) -> Verdict:
    sizes: dict[tuple[OpKind, int], Node] = {}
    for n in members:
        if not is_heavy(n):
            sizes.setdefault((get_op(n.op).kind, n.type.numel), n)
    return _check_sizes([n for n in members if is_heavy(n)], sizes, types, {n.name: i for i, n in enumerate(members)})


def _check_sizes(heavy: Sequence[Node], sizes: dict[tuple[OpKind, int], Node], types: dict[str, TensorType],
                 order: dict[str, int]) -> Verdict:
    """`check_iteration_space` from the heavy members and, for the others, the first member
    (graph order) of each (op kind, element count): the rules read only kind and size, so
    the first member breaking one is the first of the entries breaking it."""
    anchor = anchor_of(heavy)
    if anchor is None:
        largest = max(size for _, size in sizes)
        bad = [(order[n.name], n) for (_, size), n in sizes.items() if largest % max(size, 1)]
        if bad:
            n = min(bad, key=lambda x: x[0])[1]
            return Verdict(False, "iteration-space",
                           f"%{n.name} has {n.type.numel} elements, which does not divide {largest}")
        return LEGAL
    allowed = {anchor.type.numel} | {types[o].numel for o in anchor.operands}
    for other in heavy:
        allowed |= {other.type.numel} | {types[o].numel for o in other.operands}
    bad = []
    for (kind, size), n in sizes.items():
        if size in allowed or (kind is OpKind.layout and size <= max(allowed)):
            continue
        if kind in (OpKind.pointwise, OpKind.source) and any(a % max(size, 1) == 0 for a in allowed):
            continue  # a smaller pointwise value broadcast over the anchor's space
        bad.append((order[n.name], n))
    if bad:
        n = min(bad, key=lambda x: x[0])[1]
        return Verdict(False, "iteration-space",
                       f"%{n.name} ({n.op}, {n.type.numel} elements) runs over neither the result nor an operand "
                       f"of %{anchor.name} ({anchor.op}); sizes allowed: {sorted(allowed)}")
    return LEGAL


def cycle_verdict(path: Sequence[str]) -> Verdict:
    return Verdict(False, "cycle", "merging would close the path " + " -> ".join(
        f"%{c}" for c in path) + " through another kernel")


def check_merge(part: Partition, a: str, b: str, *, path: bool = True) -> Verdict:
    """Whether groups `a` and `b` of the partition may become one kernel.

    Reads the groups' kept facts (heavy members, kinds and sizes, edges), so its cost does
    not grow with the groups. `path=False`: a cycle is refused without the path it would
    close (its detail left empty), which may run through every layer between the two
    groups; the fusion pass finds the paths of the refusals it records afterwards."""
    fa, fb = part.facts[a], part.facts[b]
    order, nodes, types = part.order, part.nodes, part.types
    heavy = [nodes[n] for n in sorted(fa.heavy + fb.heavy, key=order.__getitem__)]
    verdict = _check_heavy(heavy, len(part.members[a]) + len(part.members[b]), types, nodes)
    if not verdict.legal:
        return verdict
    sizes = {k: nodes[n] for k, n in fa.sizes.items()}
    for k, n in fb.sizes.items():
        if k not in sizes or order[n] < order[sizes[k].name]:
            sizes[k] = nodes[n]
    space = _check_sizes(heavy, sizes, types, order)
    if not space.legal:
        return space
    if not path:
        if part.closes_cycle(a, b):
            return Verdict(False, "cycle")
    else:
        cycle = part.would_cycle(a, b)
        if cycle:
            return cycle_verdict(cycle)
    return verdict if verdict.rule != "legal" else LEGAL


def check_layer(part: Partition, keys: Sequence[str]) -> Verdict:
    """Whether a set of groups (a decoder layer) may stream as one dataflow kernel."""
    members = [n for k in keys for n in part.members[k]]
    if any(get_op(part.nodes[n].op).template is Template.moe for n in members):
        return Verdict(False, "region-op", "an moe node stays alone: the expert scheduler moves its weights")
    union = set(keys)
    for k in keys:
        stack, seen = [s for s in part.successors(k) if s not in union], set()
        while stack:
            g = stack.pop()
            if g in seen:
                continue
            seen.add(g)
            for nxt in part.successors(g):
                if nxt in union:
                    return Verdict(False, "cycle", f"a path leaves the layer at group %{k} and re-enters it "
                                                   f"through %{g}")
                stack.append(nxt)
    return LEGAL
