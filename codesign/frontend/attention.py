"""Recognise attention in a captured graph and make it one `attention` op.

Two rewrites: (1) the decomposed pattern `softmax(q·kᵀ·scale [+ mask]) · v` that eager
attention code produces becomes `attention(q, k, v[, mask])` (with a mask only when the mask
is a constant leaving every query row a key: the op gives 0 for a fully masked row, eager NaN); (2) a mask that depends on
no input or weight (HF builds causal masks from `arange`s) is evaluated at compile time,
and when it is exactly causal (or all-true) it is dropped in favour of `causal=true`,
which tiling and code generation exploit (FlashAttention skips masked tiles).
"""

from __future__ import annotations

import math

import torch

from codesign.ir.graph import Graph, Node
from codesign.ir.interpreter import run_graph
from codesign.ir.types import DType


def _scalar(node: Node | None) -> float | None:
    if node is not None and node.op == "full" and node.type.rank == 0:
        return float(node.attrs["value"])
    return None


def _is_last_two_swap(node: Node | None) -> bool:
    if node is None or node.op != "permute":
        return False
    perm = node.attrs["perm"]
    n = len(perm)
    return n >= 2 and tuple(perm) == tuple(range(n - 2)) + (n - 1, n - 2)


def _match(graph: Graph, out: Node, defs: dict[str, Node], users: dict[str, list[Node]]):
    """If `out` ends an attention pattern, the (q, k, v, mask, scale, nodes-to-drop)."""
    if out.op != "matmul":
        return None
    p_name, v = out.operands
    chain: list[Node] = []
    p = defs.get(p_name)
    if p is not None and p.op == "cast":
        chain.append(p)
        p = defs.get(p.operands[0])
    if p is None or p.op != "softmax" or p.attrs["dim"] != p.type.rank - 1:
        return None
    chain.append(p)
    s = defs.get(p.operands[0])
    if s is not None and s.op == "cast":
        chain.append(s)
        s = defs.get(s.operands[0])
    mask, scale = None, 1.0
    if s is not None and s.op == "add":
        a, b = (defs.get(o) for o in s.operands)
        if a is not None and a.op in ("matmul", "mul", "div"):
            mask, chain = s.operands[1], chain + [s]
            s = a
        elif b is not None and b.op in ("matmul", "mul", "div"):
            mask, chain = s.operands[0], chain + [s]
            s = b
    elif s is not None and s.op == "where":
        fill = _scalar(defs.get(s.operands[2]))
        if fill is not None and (fill == -math.inf or fill <= torch.finfo(torch.float16).min):
            mask, chain = s.operands[0], chain + [s]
            s = defs.get(s.operands[1])
    if s is not None and s.op in ("mul", "div"):
        factor = _scalar(defs.get(s.operands[1]))
        if factor is None or factor == 0:
            return None
        scale = factor if s.op == "mul" else 1.0 / factor
        chain.append(s)
        s = defs.get(s.operands[0])
    if s is None or s.op != "matmul":
        return None
    chain.append(s)
    q, kt_name = s.operands
    kt = defs.get(kt_name)
    if not _is_last_two_swap(kt):
        return None
    k = kt.operands[0]
    for node in chain:  # every intermediate must feed only the next step
        if len(users.get(node.name, [])) != 1 or node.name in graph.outputs:
            return None
    types = graph.types()
    if types[q].rank != types[k].rank or types[q].shape[:-2] != types[k].shape[:-2]:
        return None
    return q, k, v, mask, scale, chain


def fuse_attention_patterns(graph: Graph) -> Graph:
    """Rewrite (1): decomposed softmax(q kᵀ) v into `attention` nodes."""
    defs, users = graph.node_map(), graph.users()
    replaced: dict[str, Node] = {}
    dropped: set[str] = set()
    for node in graph.nodes:
        found = _match(graph, node, defs, users)
        if found is None:
            continue
        q, k, v, mask, scale, chain = found
        types = graph.types()
        operands = [q, k, v]
        if mask is not None:
            mt = types[mask]
            if mt.dtype is not DType.i1 and mt.dtype != types[q].dtype:
                continue
            if not _keeps_a_key_per_row(graph, mask, defs):
                continue
            operands.append(mask)
        replaced[node.name] = Node(node.name, "attention", tuple(operands), node.type,
                                   {"scale": float(scale), "causal": False}, (), node.loc)
        dropped.update(n.name for n in chain)
        dropped.discard(node.name)
    if not replaced:
        return graph
    nodes = [replaced.get(n.name, n) for n in graph.nodes if n.name not in dropped]
    # the permute of k may now be unused; dead nodes are left for dead-code elimination
    return graph.with_nodes(nodes)


def _keeps_a_key_per_row(graph: Graph, mask: str, defs: dict[str, Node]) -> bool:
    """Whether `mask` is input-independent and leaves every query row a key. Only then do the
    eager pattern and the op agree: on a row with every key masked eager's softmax gives NaN
    (under a finite fill, the mean of v), the op 0 (SDPA's semantics); a mask computed from
    the inputs could mask a whole row at run time, so its pattern is left as it is."""
    if graph.types()[mask].numel > 1 << 24 or _depends_on_inputs(graph, mask, defs):
        return False
    value = _constant_value(graph, mask)
    keep = value if value.dtype == torch.bool else value > -math.inf
    return bool(keep.any(-1).all()) if keep.dim() else bool(keep)


def _depends_on_inputs(graph: Graph, name: str, defs: dict[str, Node]) -> bool:
    stack, seen = [name], set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        node = defs.get(n)
        if node is None:
            return True  # a graph input
        stack.extend(node.operands)
    return False


def _constant_value(graph: Graph, name: str) -> torch.Tensor:
    """Evaluate an input-independent value by interpreting just its slice of the graph."""
    sub = Graph("mask", (), tuple(graph.nodes), (name,))
    needed, defs, stack = set(), graph.node_map(), [name]
    while stack:
        n = stack.pop()
        if n not in needed:
            needed.add(n)
            stack.extend(defs[n].operands)
    sub = sub.with_nodes([n for n in graph.nodes if n.name in needed])
    return run_graph(sub, [])[0]


def simplify_constant_masks(graph: Graph) -> Graph:
    """Rewrite (2): a compile-time causal (or all-true) mask becomes `causal=true` (or none)."""
    defs = graph.node_map()
    types = graph.types()
    nodes = []
    for node in graph.nodes:
        if node.op != "attention" or len(node.operands) != 4 or node.attrs.get("causal"):
            nodes.append(node)
            continue
        mask = node.operands[3]
        if types[mask].numel > 1 << 24 or _depends_on_inputs(graph, mask, defs):
            nodes.append(node)
            continue
        value = _constant_value(graph, mask)
        lq, lk = types[node.operands[0]].shape[-2], types[node.operands[1]].shape[-2]
        keep = value if value.dtype == torch.bool else value == 0
        keep = keep.expand(*keep.shape[:-2], lq, lk) if keep.dim() >= 2 else keep.expand(lq, lk)
        causal = torch.ones(lq, lk, dtype=torch.bool).tril(lk - lq)
        if bool(keep.all()):
            nodes.append(node.with_(operands=node.operands[:3]))
        elif bool((keep == causal).all()) and (value.dtype == torch.bool or bool(
                (value[~keep.expand_as(value)] == -math.inf).all()) or bool(
                (value.masked_select(~keep) <= torch.finfo(value.dtype).min).all())):
            nodes.append(node.with_(operands=node.operands[:3], attrs={**node.attrs, "causal": True}))
        else:
            nodes.append(node)
    return graph.with_nodes(nodes)


def _drop_dead(graph: Graph) -> Graph:
    live = set(graph.outputs)
    kept = []
    for node in reversed(graph.nodes):
        if node.name in live:
            kept.append(node)
            live.update(node.operands)
    return graph.with_nodes(reversed(kept))


def recognize_attention(graph: Graph) -> Graph:
    return _drop_dead(simplify_constant_masks(fuse_attention_patterns(graph)))
