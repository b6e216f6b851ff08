"""Lowerings from graph nodes to linalg on tensors, chosen by the op's template.

Ops with a scalar body (pointwise, layout, source, gather, batch_norm) lower from it: one
`linalg.generic` with the node's own indexing maps and the body walked by
`mlir_scalar.emit`. Reductions fold their combiner; contractions are a mul-add generic;
named ops that are several loop nests in disguise (softmax, the norms, attention) become
short sequences of generics. `TEMPLATES` maps `OpDef.template` to a lowering (`LOWERINGS`
is the same by op name); an op without one is refused with an `MlirExportError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
from iree.compiler import ir
from iree.compiler.dialects import arith, math, tensor

from codesign.codegen.lowering import avg_pool_divisors
from codesign.export import mlir_kernels as K
from codesign.export import mlir_scalar as S
from codesign.export.mlir_builder import (Builder, MlirExportError, element_type, is_semi_affine,
                                          shift, substitute)
from codesign.ir.affine import AffineMap, Dim, bound
from codesign.ir.graph import Node
from codesign.ir.ops.layout import reshape_map
from codesign.ir.ops.registry import OPS, IterKind, OpDef, Structure, Template, Trait, get_op
from codesign.ir.scalar import Acc, Lit, Load, compute_dtype, highest, is_plain_load, lowest, walk
from codesign.ir.types import DType, TensorType


@dataclass(frozen=True)
class NodeContext:
    """Everything one lowering needs: the node, its operand values and types, its maps."""

    builder: Builder
    node: Node
    operands: Sequence[ir.Value]
    operand_types: Sequence[TensorType]
    structure: Structure
    attrs: Mapping[str, object]

    @property
    def type(self) -> TensorType:
        return self.node.type

    @property
    def op(self) -> OpDef:
        return get_op(self.node.op)

    @property
    def iterators(self) -> list[IterKind]:
        return [d.kind for d in self.structure.domain]

    def error(self, why: str) -> MlirExportError:
        return MlirExportError(f"%{self.node.name} = {self.node.op}(...): {why}")


Lowering = Callable[[NodeContext], ir.Value]


# -- elementwise: the scalar body at every point ---------------------------------------------
def lower_elementwise(c: NodeContext) -> ir.Value:
    """One parallel generic whose body is `structure.expr`, walked by `mlir_scalar.emit`.

    Plain loads are block arguments through the operand maps (or `tensor.extract`s where
    linalg could not take the map, see `Builder.map_elements`); gated and indirect loads
    (pad, concat, gathers) `tensor.extract` at a clamped coordinate and select 0 where
    invalid. A constant body is a splat; a copy through a relinearising or strided map is a
    view (`tensor` reshape / extract_slice).
    """
    b, st, expr = c.builder, c.structure, c.structure.expr
    if expr is None:
        raise c.error("has no scalar body (Structure.expr) to lower; give the op one in its "
                      "module under codesign/ir/ops")
    if any(d.kind is not IterKind.parallel for d in st.domain) or st.result_map != K.identity(c.type.rank):
        raise c.error("an elementwise body needs a parallel domain written through the identity map")
    view = _view(c)
    if view is not None:
        return view
    if isinstance(expr, Lit) and expr.dtype is c.type.dtype:
        return b.splat(c.type.shape, c.type.dtype, expr.value)
    plain = sorted({x.operand for x in walk(expr) if isinstance(x, Load) and is_plain_load(x, x.operand)})

    def body(*args: ir.Value) -> list[ir.Value]:
        env = dict(zip(plain, args))

        def load(x: Load, index: Sequence[ir.Value] | None, valid: ir.Value | None) -> ir.Value:
            if index is None and valid is None:
                return env[x.operand]
            return _gathered(c, x.operand, index, valid)
        return [S.cast(b, S.emit(b, expr, load), compute_dtype(expr.dtype), c.type.dtype)]
    return b.map_elements([c.operands[i] for i in plain], [st.operand_maps[i] for i in plain],
                          c.type.shape, c.type.dtype, body)


def _gathered(c: NodeContext, operand: int, index: Sequence[ir.Value] | None,
              valid: ir.Value | None) -> ir.Value:
    """Operand `operand` at `index` (i64 values) or through its map; 0 where `valid` is false.

    A gated read clamps each coordinate that may leave the operand, so it stays in bounds.
    """
    b, value, t = c.builder, c.operands[operand], c.operand_types[operand]
    if index is None:
        amap = c.structure.operand_maps[operand]
        coords = [b.index_of(r) for r in amap.results]
        leaves = [not 0 <= lo <= hi < size for (lo, hi), size in
                  zip((bound(r, c.type.shape) for r in amap.results), t.shape)]
    else:
        coords = [arith.index_cast(ir.IndexType.get(), i) for i in index]
        leaves = [True] * t.rank
    if valid is None:
        return tensor.extract(value, coords)
    coords = [arith.minsi(arith.maxsi(i, b.index_constant(0)), b.index_constant(size - 1)) if leave else i
              for i, leave, size in zip(coords, leaves, t.shape)]
    return arith.select(valid, tensor.extract(value, coords), b.constant(t.dtype, 0))


def _view(c: NodeContext) -> ir.Value | None:
    """A body that copies its one operand through a reshape or a strided-window map: the
    `tensor` view (IREE folds it), not a gather."""
    st, expr = c.structure, c.structure.expr
    if len(c.operands) != 1 or not is_plain_load(expr) or expr.dtype is not c.type.dtype:
        return None
    (xt,), (amap,), shape = c.operand_types, st.operand_maps, c.type.shape
    if amap == reshape_map(xt.shape, shape):
        return c.builder.reshape(c.operands[0], shape)
    if is_semi_affine(amap) or xt.rank != len(shape):
        return None
    zero = [0] * len(shape)
    offsets = [r.evaluate(zero) for r in amap.results]
    steps = []
    for i, r in enumerate(amap.results):
        unit = [int(j == i) for j in range(len(shape))]
        steps.append(r.evaluate(unit) - offsets[i])
        if r.dims_used() - {i} or steps[-1] < 1 or offsets[i] < 0:
            return None
    if list(xt.shape) == list(shape):
        return c.operands[0]
    return c.builder.extract_slice(c.operands[0], offsets, shape, steps)


# -- reductions -----------------------------------------------------------------------------
def lower_reduce(c: NodeContext) -> ir.Value:
    """The structure's combiner: identity as the init fill, the combine op in the body, the
    finalize (mean's division) after, then a reshape for keepdim. Logic combiners fold i1."""
    b, comb = c.builder, c.structure.combiner
    (x,), (xt,) = c.operands, c.operand_types
    if comb is None:
        raise c.error("a reduce template needs a combiner (Structure.combiner)")
    dims = [i for i, d in enumerate(c.structure.domain) if d.kind is IterKind.reduction]
    acc = comb.accumulator(xt.dtype)
    out = K.reduce(b, x, acc, dims, comb.identity,
                   lambda v, a: S.apply(b, comb.op, acc, [S.cast(b, v, xt.dtype, acc), a]))
    final = comb.finalize or Acc(acc)
    if final != Acc(c.type.dtype):
        shape = list(out.type.shape)
        out = b.map_elements([out], [K.identity(len(shape))], shape, c.type.dtype, lambda a: [
            S.cast(b, S.emit(b, final, acc=a), compute_dtype(final.dtype), c.type.dtype)])
    return b.reshape(out, c.type.shape)


def lower_variance(c: NodeContext) -> ir.Value:
    """Two passes, mean then Σ (x - mean)² / (N - correction)."""
    b = c.builder
    (x,), (xt,) = c.operands, c.operand_types
    dims = list(c.attrs["dims"])
    work = compute_dtype(xt.dtype)
    x = K.cast_tensor(b, x, xt.dtype, work)
    dof = int(np.prod([xt.shape[d] for d in dims])) - c.attrs["correction"]
    squares = K.centered_square_sum(b, x, work, dims, K.mean(b, x, work, dims))
    out = K.scale(b, squares, work, 1.0 / dof if dof > 0 else float("inf"))
    return b.reshape(K.cast_tensor(b, out, work, c.type.dtype), c.type.shape)


def lower_argminmax(c: NodeContext) -> ir.Value:
    """A two-output reduction carrying (best value, its index); a later tie never wins."""
    b = c.builder
    (x,), (xt,) = c.operands, c.operand_types
    dim, dtype, rank = c.attrs["dim"], xt.dtype, xt.rank
    is_max = c.op.has(Trait.maximizing)
    kept = K.kept_shape(xt.shape, [dim])
    values = b.filled(kept, dtype, lowest(dtype) if is_max else highest(dtype))
    indices = b.filled(kept, DType.i64, 0)

    def body(v: ir.Value, best: ir.Value, at: ir.Value) -> list[ir.Value]:
        here = arith.index_cast(element_type(DType.i64), b.loop_index(dim))
        better = S.compare(dtype, "gt" if is_max else "lt", v, best)
        return [arith.select(better, v, best), arith.select(better, here, at)]
    kmap = K.kept_map(rank, [dim])
    _, out = b.generic([x], [values, indices], [K.identity(rank), kmap, kmap], c.iterators, body)
    return b.reshape(out, c.type.shape)


def lower_cumsum(c: NodeContext) -> ir.Value:
    """The structure's (i..., j) domain with a triangular body: add x[j] only where j <= i."""
    b = c.builder
    (x,), (xt,) = c.operands, c.operand_types
    dim, rank = c.attrs["dim"], xt.rank
    work = compute_dtype(xt.dtype)
    x = K.cast_tensor(b, x, xt.dtype, work)

    def body(v: ir.Value, acc: ir.Value) -> list[ir.Value]:
        inside = arith.cmpi(arith.CmpIPredicate.ule, b.loop_index(rank), b.loop_index(dim))
        return [arith.select(inside, S.add(work, acc, v), acc)]
    (out,) = b.generic([x], [b.filled(xt.shape, work, 0)],
                       [c.structure.operand_maps[0], c.structure.result_map], c.iterators, body)
    return K.cast_tensor(b, out, work, c.type.dtype)


# -- normalisation --------------------------------------------------------------------------
def lower_softmax(c: NodeContext) -> ir.Value:
    b, dtype = c.builder, c.type.dtype
    work = compute_dtype(dtype)
    x = K.cast_tensor(b, c.operands[0], dtype, work)
    out = K.softmax(b, x, work, c.attrs["dim"], log=c.op.has(Trait.log_result))
    return K.cast_tensor(b, out, work, dtype)


def _normalize(c: NodeContext, x: ir.Value, work: DType, center: ir.Value | None,
               spread: ir.Value, stat_map: AffineMap) -> ir.Value:
    """(x - center) · rsqrt(spread + eps) · weight + bias, with the node's param maps."""
    b, shape = c.builder, c.type.shape
    params = [K.cast_tensor(b, p, t.dtype, work) for p, t in zip(c.operands[1:], c.operand_types[1:])]
    stats = ([center] if center is not None else []) + [spread]
    eps = c.attrs["eps"]

    def body(v: ir.Value, *rest: ir.Value) -> list[ir.Value]:
        stat_values, affine = rest[:len(stats)], rest[len(stats):]
        if center is not None:
            v = arith.subf(v, stat_values[0])
        y = arith.mulf(v, math.rsqrt(arith.addf(stat_values[-1], b.constant(work, eps))))
        if affine:
            y = arith.mulf(y, affine[0])
        if len(affine) > 1:
            y = arith.addf(y, affine[1])
        return [y]
    out = b.map_elements([x, *stats, *params],
                         [K.identity(len(shape)), *[stat_map] * len(stats), *c.structure.operand_maps[1:]],
                         shape, work, body)
    return K.cast_tensor(b, out, work, c.type.dtype)


def lower_norm(c: NodeContext) -> ir.Value:
    """layer / RMS norm over the trailing dims: a centered norm takes the mean and the biased
    variance (two passes), RMS the mean square; then normalise."""
    b, dtype, rank = c.builder, c.type.dtype, c.type.rank
    work = compute_dtype(dtype)
    x = K.cast_tensor(b, c.operands[0], dtype, work)
    dims = list(range(rank - c.attrs["normalized_rank"], rank))
    count = int(np.prod([c.type.shape[d] for d in dims]))
    mu = K.mean(b, x, work, dims) if c.op.has(Trait.centered) else None
    squares = (K.centered_square_sum(b, x, work, dims, mu) if mu is not None else
               K.reduce(b, x, work, dims, 0, lambda v, acc: arith.addf(acc, arith.mulf(v, v))))
    return _normalize(c, x, work, mu, K.scale(b, squares, work, 1.0 / count), K.kept_map(rank, dims))


def lower_group_norm(c: NodeContext) -> ir.Value:
    """View x[N, C, *] as [N, G, C/G·spatial] for the statistics; read them back per channel."""
    b, dtype, shape = c.builder, c.type.dtype, c.type.shape
    work = compute_dtype(dtype)
    x = K.cast_tensor(b, c.operands[0], dtype, work)
    groups = c.attrs["groups"]
    per_group = shape[1] // groups
    grouped = b.reshape(x, [shape[0], groups, int(np.prod(shape[1:])) // groups])
    mu = K.mean(b, grouped, work, [2])
    count = grouped.type.shape[2]
    var = K.scale(b, K.centered_square_sum(b, grouped, work, [2], mu), work, 1.0 / count)
    stat_map = AffineMap(len(shape), (Dim(0), Dim(1) // per_group))
    return _normalize(c, x, work, mu, var, stat_map)


# -- contractions ---------------------------------------------------------------------------
def _mul_add(work: DType, src: DType, b: Builder) -> Callable[..., list[ir.Value]]:
    def body(x: ir.Value, y: ir.Value, acc: ir.Value) -> list[ir.Value]:
        x, y = S.cast(b, x, src, work), S.cast(b, y, src, work)
        return [S.add(work, acc, S.mul(work, x, y))]
    return body


def lower_contraction(c: NodeContext) -> ir.Value:
    """matmul / linear / conv: one mul-add generic from the structure's maps.

    The bias (linear, conv) initialises the accumulator instead of a separate add; conv's
    zero padding is a `tensor.pad` of the input, with its map shifted by +padding.
    """
    b, st, dtype = c.builder, c.structure, c.type.dtype
    work = compute_dtype(dtype)
    lhs, rhs = c.operands[0], c.operands[1]
    lhs_map, rhs_map = st.operand_maps[0], st.operand_maps[1]
    if c.op.template is Template.conv:
        pads = [0, 0, *c.attrs["padding"]]
        lhs = b.pad(lhs, pads, pads, dtype, 0.0)
        lhs_map = shift(lhs_map, pads)
    if len(c.operands) == 3:
        bias = K.cast_tensor(b, c.operands[2], dtype, work)
        bias_map = AffineMap(c.type.rank, st.operand_maps[2].results)  # reads output dims only
        init = b.map_elements([bias], [bias_map], c.type.shape, work, lambda v: [v])
    else:
        init = b.filled(c.type.shape, work, 0)
    (out,) = b.generic([lhs, rhs], [init], [lhs_map, rhs_map, st.result_map], c.iterators,
                       _mul_add(work, dtype, b))
    return K.cast_tensor(b, out, work, dtype)


def lower_attention(c: NodeContext) -> ir.Value:
    """softmax(q kᵀ · scale + mask) v as QKᵀ, mask, softmax and PV generics.

    Each stage reuses the structure's maps renamed into its own smaller domain, so
    grouped-query attention (kv head = q head floordiv group) needs no special case.
    """
    b, st, dtype = c.builder, c.structure, c.type.dtype
    work = compute_dtype(dtype)
    qt, kt = c.operand_types[0], c.operand_types[1]
    q, k, v = (K.cast_tensor(b, val, dtype, work) for val in c.operands[:3])
    nb = qt.rank - 2
    batch = {i: i for i in range(nb)}
    i_, e_, j_, d_ = nb, nb + 1, nb + 2, nb + 3  # the structure's domain (batch..., i, e, j, d)
    lq, lk = qt.shape[-2], kt.shape[-2]
    scores_shape = [*qt.shape[:-1], lk]
    batch_dims = tuple(Dim(i) for i in range(nb))

    qk = {**batch, i_: nb, j_: nb + 1, d_: nb + 2}
    pv = {**batch, i_: nb, e_: nb + 1, j_: nb + 2}
    k_map, v_map = substitute(st.operand_maps[1], qk, nb + 3), substitute(st.operand_maps[2], pv, nb + 3)
    if is_semi_affine(st.operand_maps[1]):
        # Grouped-query: the kv head is q head floordiv group, a map IREE cannot tile in a
        # contraction. Repeat k and v per query head first (map_elements gathers them).
        k = _per_query_head(b, k, substitute(st.operand_maps[1], {**batch, j_: nb, d_: nb + 1}, nb + 2),
                            [*qt.shape[:-2], lk, qt.shape[-1]], work)
        v = _per_query_head(b, v, substitute(st.operand_maps[2], {**batch, j_: nb, e_: nb + 1}, nb + 2),
                            [*qt.shape[:-2], lk, c.type.shape[-1]], work)
        k_map = AffineMap(nb + 3, (*batch_dims, Dim(nb + 1), Dim(nb + 2)))
        v_map = AffineMap(nb + 3, (*batch_dims, Dim(nb + 2), Dim(nb + 1)))
    (scores,) = b.generic(
        [q, k], [b.filled(scores_shape, work, 0)],
        [substitute(st.operand_maps[0], qk, nb + 3), k_map,
         AffineMap(nb + 3, (*batch_dims, Dim(nb), Dim(nb + 1)))],
        [IterKind.parallel] * (nb + 2) + [IterKind.reduction], _mul_add(work, work, b))

    inputs, maps = [scores], [K.identity(nb + 2)]
    mask_dtype = None
    if len(c.operands) == 4:
        mask_dtype = c.operand_types[3].dtype
        inputs.append(c.operands[3])
        maps.append(substitute(st.operand_maps[3], {**batch, i_: nb, j_: nb + 1}, nb + 2))

    def mask_body(s: ir.Value, *mask: ir.Value) -> list[ir.Value]:
        s = arith.mulf(s, b.constant(work, c.attrs["scale"]))
        minus_inf = b.constant(work, float("-inf"))
        if c.attrs["causal"]:
            row = arith.addi(b.loop_index(nb), b.index_constant(lk - lq))
            keep = arith.cmpi(arith.CmpIPredicate.sle, b.loop_index(nb + 1), row)
            s = arith.select(keep, s, minus_inf)
        if mask and mask_dtype is DType.i1:
            s = arith.select(mask[0], s, minus_inf)
        elif mask:
            s = arith.addf(s, S.cast(b, mask[0], mask_dtype, work))
        return [s]
    masked = b.map_elements(inputs, maps, scores_shape, work, mask_body)
    probs = K.softmax(b, masked, work, nb + 1, safe=True)  # a row with every key masked: 0

    out_shape = list(c.type.shape)
    (out,) = b.generic(
        [probs, v], [b.filled(out_shape, work, 0)],
        [AffineMap(nb + 3, (*batch_dims, Dim(nb), Dim(nb + 2))), v_map,
         substitute(st.result_map, pv, nb + 3)],
        [IterKind.parallel] * (nb + 2) + [IterKind.reduction], _mul_add(work, work, b))
    return K.cast_tensor(b, out, work, dtype)


def _per_query_head(b: Builder, value: ir.Value, amap: AffineMap, shape: Sequence[int],
                    dtype: DType) -> ir.Value:
    """k or v with one head per query head: a copy through the grouped-query map."""
    return b.map_elements([value], [amap], shape, dtype, lambda x: [x])


# -- windows --------------------------------------------------------------------------------
def lower_pool(c: NodeContext) -> ir.Value:
    """Pad (-inf for max, 0 for avg), then a window-reduction generic with shifted maps.

    ceil_mode windows may run past the padding; the high side is padded further so every
    window read is in bounds (torch ignores those elements, and so do -inf and the divisor).
    """
    b, st, a = c.builder, c.structure, c.attrs
    (x,), (xt,) = c.operands, c.operand_types
    is_max = c.op.has(Trait.maximizing)
    dtype = xt.dtype
    work = dtype if is_max else compute_dtype(dtype)
    x = K.cast_tensor(b, x, dtype, work)
    low, high = [0, 0], [0, 0]
    for i in range(2):
        size, out = xt.shape[2 + i], c.type.shape[2 + i]
        reach = (out - 1) * a["stride"][i] + (a["kernel"][i] - 1) * a["dilation"][i] + 1
        low.append(a["padding"][i])
        high.append(max(a["padding"][i], reach - size - a["padding"][i]))
    fill = lowest(work) if is_max else 0.0
    x = b.pad(x, low, high, work, fill)
    # The window loops appear in no map on their own, so linalg could not infer their
    # bounds; an unread [kh, kw] operand supplies them, as linalg's pooling ops do.
    window = b.empty(a["kernel"], work)
    window_map = AffineMap(6, (Dim(4), Dim(5)))
    combine = (lambda v, _w, acc: [S.maximum(work, v, acc)]) if is_max else (
        lambda v, _w, acc: [arith.addf(v, acc)])
    (out,) = b.generic([x, window], [b.filled(c.type.shape, work, fill)],
                       [shift(st.operand_maps[0], low), window_map, st.result_map], c.iterators, combine)
    if not is_max:
        table = avg_pool_divisors(xt.shape[2:], a)
        divisor = b.dense(table.astype(np.float64 if work is DType.f64 else np.float32))
        out = b.map_elements([out, divisor], [K.identity(4), AffineMap(4, (Dim(2), Dim(3)))],
                             c.type.shape, work, lambda s, d: [arith.divf(s, d)])
    return K.cast_tensor(b, out, work, dtype)


def refuse_moe(c: NodeContext) -> ir.Value:
    raise c.error("MoE export is not supported yet (routing needs top-k and a data-dependent "
                  "scatter); export the expert region as its own graph, or lower the moe "
                  "node to dense ops before exporting")


TEMPLATES: dict[Template, Lowering] = {
    Template.elementwise: lower_elementwise, Template.reduce: lower_reduce,
    Template.variance: lower_variance, Template.argminmax: lower_argminmax, Template.scan: lower_cumsum,
    Template.softmax: lower_softmax, Template.norm: lower_norm, Template.group_norm: lower_group_norm,
    Template.gemm: lower_contraction, Template.conv: lower_contraction, Template.attention: lower_attention,
    Template.pool: lower_pool, Template.moe: refuse_moe,
}
"""An op's template (`OpDef.template`) → its lowering."""


def lowering_for(op: OpDef) -> Lowering | None:
    return TEMPLATES.get(op.template)


class _ByName(Mapping[str, Lowering]):
    """Op name → lowering, read through each registered op's template (callers ask by name)."""

    def __getitem__(self, name: str) -> Lowering:
        lowering = lowering_for(OPS[name]) if name in OPS else None
        if lowering is None:
            raise KeyError(name)
        return lowering

    def __iter__(self):
        return (name for name, op in OPS.items() if lowering_for(op) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


LOWERINGS: Mapping[str, Lowering] = _ByName()
