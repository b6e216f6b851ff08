"""An expert region re-typed for a block of rows, so the C++ backend runs only routed tokens.

A `moe` region is typed for all T tokens (the reference runs every expert on every token
and keeps the routed rows). Compiled as it is, each expert would cost T rows of compute
where only the rows routed to it matter: E/top_k times too much. An expert body is
row-wise (each token's output depends on that token only), so the same body typed for a
block of R rows, run on the routed rows packed R at a time, computes the same values.
`row_block` re-infers every node's type with the leading dim R; where the body does not
follow (a reshape with T baked in, a reduction over tokens), the shapes disagree with the
T-row ones and it returns None, and the backend keeps the all-rows body.
"""

from __future__ import annotations

from dataclasses import replace

from codesign.codegen.lowering import node_structure
from codesign.ir.affine import Dim
from codesign.ir.graph import Graph
from codesign.ir.ops import IterKind, get_op
from codesign.ir.scalar import Affine, Loop, walk
from codesign.ir.types import TensorType

__all__ = ["row_block"]


def _with_rows(t: TensorType, tokens: int, rows: int) -> TensorType:
    return replace(t, shape=(rows,) + t.shape[1:]) if t.shape[:1] == (tokens,) else t


def _row_wise(node, per_token: set[str], types) -> bool:
    """Does ``node`` compute each token's row from that token's rows only? Read off its
    structure: the result's first dim is a parallel loop d that every per-token operand
    reads as its own first dim (and nowhere else), no other operand reads, and the body
    never uses as a value (a triangle mask, a concat's offsets)."""
    st = node_structure(node, types)
    first = st.result_map.results[0] if st.result_map.results else None
    if not isinstance(first, Dim) or st.domain[first.index].kind is not IterKind.parallel:
        return False
    d = first.index
    for o, m in zip(node.operands, st.operand_maps):
        if m is None:
            return False
        if o in per_token:
            if m.results[:1] != (first,) or any(d in r.dims_used() for r in m.results[1:]):
                return False
        elif d in m.dims_used():
            return False
    body = walk(st.expr) if st.expr is not None else ()
    return not any(isinstance(x, Loop) and x.dim == d or isinstance(x, Affine) and d in x.expr.dims_used()
                   for x in body)


def row_block(region: Graph, rows: int) -> Graph | None:
    """``region`` typed for ``rows`` tokens, or None if its shapes do not follow the rows."""
    if not region.inputs or not region.inputs[0].type.shape:
        return None
    tokens = region.inputs[0].type.shape[0]
    inputs = (replace(region.inputs[0], type=_with_rows(region.inputs[0].type, tokens, rows)),) + region.inputs[1:]
    types = {i.name: i.type for i in inputs}
    per_token = {inputs[0].name}  # values with one row per token
    nodes = []
    for node in region.nodes:
        if node.regions:
            return None
        op = get_op(node.op)
        try:
            inferred = op.infer([types[o] for o in node.operands], op.attr_values(node.attrs))
        except Exception:  # noqa: BLE001 - any refusal means the body is not row-wise as typed
            return None
        expected = _with_rows(node.type, tokens, rows)
        if inferred.shape != expected.shape or inferred.dtype != expected.dtype:
            return None
        if any(o in per_token for o in node.operands):
            if expected.shape[:1] != (rows,) or not _row_wise(node.with_(type=expected), per_token, types):
                return None  # it may mix tokens (a reduction, reshape or transpose across them)
            per_token.add(node.name)
        types[node.name] = expected
        nodes.append(node.with_(type=expected))
    if any(o not in per_token for o in region.outputs):
        return None
    return replace(region, inputs=inputs, nodes=tuple(nodes))
