"""Fusion legality: may two groups become one kernel? Correctness only, never cost.

Each rule has a name that the decision ledger records when it refuses, so "why was this
not fused?" always has an answer. Rules:

- `region-op`: an MoE node stays alone (the expert scheduler moves its weights).
- `cycle`: merging would make a path leave the group and come back (not convex).
- `two-anchors`: a kernel has one main loop nest (contraction, reduction, norm, pool,
  gather); the only pair allowed is a norm prologue feeding a matmul along its contraction
  dim (`norm-prologue`), which the matmul reads whole rows of.
- `iteration-space`: every other node must run over the anchor's iteration space: its
  result, its input (a persistent reduction keeps the row on chip), or one of its operands
  (a prologue); a pure pointwise group runs over its largest node, others must divide it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from codesign.fusion.partition import Partition, anchor_of, is_heavy
from codesign.ir.graph import Node
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
    heavy = [n for n in members if is_heavy(n)]
    if any(get_op(n.op).template is Template.moe for n in members) and len(members) > 1:
        return Verdict(False, "region-op", "an moe node stays alone: the expert scheduler moves its weights")
    if len(heavy) <= 1:
        return LEGAL
    if len(heavy) == 2:
        a, b = heavy
        if _norm_prologue(a, b, nodes, types):
            return Verdict(True, "norm-prologue")
    names = ", ".join(f"%{n.name} ({n.op})" for n in heavy)
    return Verdict(False, "two-anchors", f"a kernel has one main loop nest; this one would have {names}")


def check_iteration_space(members: Sequence[Node], types: dict[str, TensorType]) -> Verdict:
    heavy = [n for n in members if is_heavy(n)]
    anchor = anchor_of(members)
    if anchor is None:
        sizes = [n.type.numel for n in members]
        largest = max(sizes)
        bad = [n for n in members if largest % max(n.type.numel, 1)]
        if bad:
            return Verdict(False, "iteration-space",
                           f"%{bad[0].name} has {bad[0].type.numel} elements, which does not divide {largest}")
        return LEGAL
    allowed = {anchor.type.numel} | {types[o].numel for o in anchor.operands}
    for other in heavy:
        allowed |= {other.type.numel} | {types[o].numel for o in other.operands}
    for n in members:
        if n is anchor or is_heavy(n):
            continue
        kind = get_op(n.op).kind
        size = n.type.numel
        if size in allowed or (kind is OpKind.layout and size <= max(allowed)):
            continue
        if kind in (OpKind.pointwise, OpKind.source) and any(a % max(size, 1) == 0 for a in allowed):
            continue  # a smaller pointwise value broadcast over the anchor's space
        return Verdict(False, "iteration-space",
                       f"%{n.name} ({n.op}, {size} elements) runs over neither the result nor an operand "
                       f"of %{anchor.name} ({anchor.op}); sizes allowed: {sorted(allowed)}")
    return LEGAL


def check_merge(part: Partition, a: str, b: str) -> Verdict:
    """Whether groups `a` and `b` of the partition may become one kernel."""
    members = [part.nodes[n] for n in sorted(set(part.members[a]) | set(part.members[b]),
                                             key=part.order.__getitem__)]
    types = part.types
    verdict = check_anchors(members, types, part.nodes)
    if not verdict.legal:
        return verdict
    space = check_iteration_space(members, types)
    if not space.legal:
        return space
    cycle = part.would_cycle(a, b)
    if cycle:
        return Verdict(False, "cycle", "merging would close the path " + " -> ".join(
            f"%{c}" for c in cycle) + " through another kernel")
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
