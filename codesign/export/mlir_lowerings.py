"""Per-op lowerings from graph nodes to linalg on tensors.

Most ops lower generically from their `Structure`: one `linalg.generic` with the node's
own indexing maps and iterator kinds, and a scalar body (`mlir_scalar.POINTWISE` for the
pointwise ops, a mul-add for contractions, a combiner for reductions). Named ops that are
several loops nests in disguise (softmax, the norms, attention) become short sequences
of generics; layout ops that are views become `tensor` ops. `LOWERINGS` maps op name to
lowering; an op missing from it is refused with an `MlirExportError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from iree.compiler import ir
from iree.compiler.dialects import arith, math, tensor

from codesign.export import mlir_kernels as K
from codesign.export import mlir_scalar as S
from codesign.export.mlir_builder import (Builder, MlirExportError, element_type, is_semi_affine,
                                          shift, substitute)
from codesign.ir.affine import AffineMap, Dim
from codesign.ir.graph import Node
from codesign.ir.ops.registry import IterKind, Structure
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
    def iterators(self) -> list[IterKind]:
        return [d.kind for d in self.structure.domain]

    def error(self, why: str) -> MlirExportError:
        return MlirExportError(f"%{self.node.name} = {self.node.op}(...): {why}")


Lowering = Callable[[NodeContext], ir.Value]


# -- pointwise ------------------------------------------------------------------------------
def lower_pointwise(c: NodeContext) -> ir.Value:
    """One parallel generic with the broadcast maps and the op's scalar body."""
    emit = S.POINTWISE[c.node.op]
    dtypes = [t.dtype for t in c.operand_types]
    if c.node.op == "where":
        dtypes = dtypes[1:]  # arithmetic happens in the value operands' type, not i1's

    def body(*args: ir.Value) -> list[ir.Value]:
        return [emit(S.ScalarCall(c.builder, args, dtypes, c.type.dtype, c.attrs, c.type.rank))]
    return c.builder.map_elements(c.operands, c.structure.operand_maps, c.type.shape,
                                  c.type.dtype, body)


# -- reductions -----------------------------------------------------------------------------
def lower_reduction(c: NodeContext) -> ir.Value:
    """Reduce into a tensor without the reduced dims, then reshape for keepdim."""
    b, op = c.builder, c.node.op
    (x,), (xt,) = c.operands, c.operand_types
    dims = list(c.attrs["dims"])
    work = K.compute_dtype(xt.dtype) if op in ("sum", "mean", "var", "prod") else xt.dtype
    x = K.cast_tensor(b, x, xt.dtype, work)
    if op == "sum":
        out = K.reduce_sum(b, x, work, dims)
    elif op == "mean":
        out = K.mean(b, x, work, dims)
    elif op == "amax":
        out = K.reduce_max(b, x, work, dims)
    elif op == "amin":
        out = K.reduce(b, x, work, dims, K.highest(work), lambda v, acc: S.minimum(work, v, acc))
    elif op == "prod":
        out = K.reduce(b, x, work, dims, 1, lambda v, acc: S.mul(work, v, acc))
    elif op == "any":
        out = K.reduce(b, x, work, dims, False,
                       lambda v, acc: arith.ori(S.truthy(b, work, v), acc), result_dtype=DType.i1)
        work = DType.i1
    else:  # var: two passes, mean then Σ (x - mean)² / (N - correction)
        count = int(np.prod([xt.shape[d] for d in dims]))
        dof = count - c.attrs["correction"]
        squares = K.centered_square_sum(b, x, work, dims, K.mean(b, x, work, dims))
        out = K.scale(b, squares, work, 1.0 / dof if dof > 0 else float("inf"))
    return b.reshape(K.cast_tensor(b, out, work, c.type.dtype), c.type.shape)


def lower_argminmax(c: NodeContext) -> ir.Value:
    """A two-output reduction carrying (best value, its index); a later tie never wins."""
    b = c.builder
    (x,), (xt,) = c.operands, c.operand_types
    dim, dtype, rank = c.attrs["dim"], xt.dtype, xt.rank
    is_max = c.node.op == "argmax"
    kept = K.kept_shape(xt.shape, [dim])
    values = b.filled(kept, dtype, K.lowest(dtype) if is_max else K.highest(dtype))
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
    work = K.compute_dtype(xt.dtype)
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
    work = K.compute_dtype(dtype)
    x = K.cast_tensor(b, c.operands[0], dtype, work)
    out = K.softmax(b, x, work, c.attrs["dim"], log=c.node.op == "log_softmax")
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


def _trailing_rows(c: NodeContext):
    """What layer_norm and rms_norm share: the input in its compute type, the normalised
    (trailing) dims, and how many elements one normalised row has."""
    dtype, rank = c.type.dtype, c.type.rank
    work = K.compute_dtype(dtype)
    x = K.cast_tensor(c.builder, c.operands[0], dtype, work)
    dims = list(range(rank - c.attrs["normalized_rank"], rank))
    return x, work, dims, int(np.prod([c.type.shape[d] for d in dims]))


def lower_layer_norm(c: NodeContext) -> ir.Value:
    """Mean and biased variance over the trailing dims, then normalise (two passes)."""
    b, rank = c.builder, c.type.rank
    x, work, dims, count = _trailing_rows(c)
    mu = K.mean(b, x, work, dims)
    var = K.scale(b, K.centered_square_sum(b, x, work, dims, mu), work, 1.0 / count)
    return _normalize(c, x, work, mu, var, K.kept_map(rank, dims))


def lower_rms_norm(c: NodeContext) -> ir.Value:
    b, rank = c.builder, c.type.rank
    x, work, dims, count = _trailing_rows(c)
    squares = K.reduce(b, x, work, dims, 0, lambda v, acc: arith.addf(acc, arith.mulf(v, v)))
    return _normalize(c, x, work, None, K.scale(b, squares, work, 1.0 / count),
                      K.kept_map(rank, dims))


def lower_group_norm(c: NodeContext) -> ir.Value:
    """View x[N, C, *] as [N, G, C/G·spatial] for the statistics; read them back per channel."""
    b, dtype, shape = c.builder, c.type.dtype, c.type.shape
    work = K.compute_dtype(dtype)
    x = K.cast_tensor(b, c.operands[0], dtype, work)
    groups = c.attrs["groups"]
    per_group = shape[1] // groups
    grouped = b.reshape(x, [shape[0], groups, int(np.prod(shape[1:])) // groups])
    mu = K.mean(b, grouped, work, [2])
    count = grouped.type.shape[2]
    var = K.scale(b, K.centered_square_sum(b, grouped, work, [2], mu), work, 1.0 / count)
    stat_map = AffineMap(len(shape), (Dim(0), Dim(1) // per_group))
    return _normalize(c, x, work, mu, var, stat_map)


def lower_batch_norm(c: NodeContext) -> ir.Value:
    """Inference batch norm is pointwise: one generic over the structure's channel maps."""
    b, dtype = c.builder, c.type.dtype
    work = K.compute_dtype(dtype)
    values = [K.cast_tensor(b, v, t.dtype, work) for v, t in zip(c.operands, c.operand_types)]
    eps = c.attrs["eps"]

    def body(x: ir.Value, mean: ir.Value, var: ir.Value, *affine: ir.Value) -> list[ir.Value]:
        y = arith.divf(arith.subf(x, mean), math.sqrt(arith.addf(var, b.constant(work, eps))))
        if affine:
            y = arith.mulf(y, affine[0])
        if len(affine) > 1:
            y = arith.addf(y, affine[1])
        return [y]
    out = b.map_elements(values, c.structure.operand_maps, c.type.shape, work, body)
    return K.cast_tensor(b, out, work, dtype)


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
    work = K.compute_dtype(dtype)
    lhs, rhs = c.operands[0], c.operands[1]
    lhs_map, rhs_map = st.operand_maps[0], st.operand_maps[1]
    if c.node.op == "conv":
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
    work = K.compute_dtype(dtype)
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
    probs = K.softmax(b, masked, work, nb + 1)

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
    is_max = c.node.op == "max_pool"
    dtype = xt.dtype
    work = dtype if is_max else K.compute_dtype(dtype)
    x = K.cast_tensor(b, x, dtype, work)
    low, high = [0, 0], [0, 0]
    for i in range(2):
        size, out = xt.shape[2 + i], c.type.shape[2 + i]
        reach = (out - 1) * a["stride"][i] + (a["kernel"][i] - 1) * a["dilation"][i] + 1
        low.append(a["padding"][i])
        high.append(max(a["padding"][i], reach - size - a["padding"][i]))
    fill = K.lowest(work) if is_max else 0.0
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
        table = _avg_pool_divisors(xt.shape[2:], a)
        divisor = b.dense(table.astype(np.float64 if work is DType.f64 else np.float32))
        out = b.map_elements([out, divisor], [K.identity(4), AffineMap(4, (Dim(2), Dim(3)))],
                             c.type.shape, work, lambda s, d: [arith.divf(s, d)])
    return K.cast_tensor(b, out, work, dtype)


def _avg_pool_divisors(spatial: Sequence[int], a: Mapping[str, object]) -> np.ndarray:
    """The per-output-position divisor torch's avg_pool uses, computed once at export time.

    It depends on the window, padding, ceil_mode and count_include_pad only, so we ask the
    reference itself: window sums of ones over window averages of ones.
    """
    ones = torch.ones(1, 1, *spatial, dtype=torch.float64)
    args = (a["kernel"], a["stride"], a["padding"], a["ceil_mode"])
    sums = F.avg_pool2d(ones, *args, count_include_pad=False, divisor_override=1)
    means = F.avg_pool2d(ones, *args, count_include_pad=a["count_include_pad"])
    return (sums / means)[0, 0].numpy()


# -- gathers --------------------------------------------------------------------------------
def lower_gather(c: NodeContext) -> ir.Value:
    """A generic over the result that reads the index operands, then `tensor.extract`s.

    embedding: table[ids[...], j]; index_select: x with dim `dim` replaced by idx[i];
    index: x[..., i0, i1, ...] with broadcast index tensors from `dim` on (negatives wrap).
    """
    b, st, op = c.builder, c.structure, c.node.op
    table, *index_values = c.operands
    xt, rank = c.operand_types[0], c.type.rank
    index_type = ir.IndexType.get()

    def coordinates(picked: list[ir.Value]) -> list[ir.Value]:
        if op == "embedding":
            return [picked[0], b.loop_index(rank - 1)]
        at = [b.loop_index(d) for d in range(rank)]
        if op == "index_select":
            at[c.attrs["dim"]] = picked[0]
            return at
        dim = c.attrs["dim"]
        block = rank - (xt.rank - len(picked))  # loops of the broadcast index block
        return at[:dim] + picked + at[dim + block:]

    def wrap(i: ir.Value, size: int) -> ir.Value:
        negative = arith.cmpi(arith.CmpIPredicate.slt, i, b.index_constant(0))
        return arith.select(negative, arith.addi(i, b.index_constant(size)), i)

    def body(*ids: ir.Value) -> list[ir.Value]:
        picked = [arith.index_cast(index_type, i) for i in ids]
        if op == "index":
            picked = [wrap(i, xt.shape[c.attrs["dim"] + k]) for k, i in enumerate(picked)]
        return [tensor.extract(table, coordinates(picked))]
    return b.map_elements(index_values, st.operand_maps[1:], c.type.shape, c.type.dtype, body)


# -- layout ---------------------------------------------------------------------------------
def lower_copy(c: NodeContext) -> ir.Value:
    """A layout op as a copy through its structure map (permute, pixel shuffle, ...)."""
    return c.builder.map_elements(c.operands, c.structure.operand_maps, c.type.shape,
                                  c.type.dtype, lambda v: [v])


def lower_slice(c: NodeContext) -> ir.Value:
    """`tensor.extract_slice`: a copy through the map `start + step·d` would let linalg infer
    the loop size from the (larger) operand, so slices stay views."""
    dim, rank = c.attrs["dim"], c.type.rank
    offsets, steps = [0] * rank, [1] * rank
    offsets[dim], steps[dim] = c.attrs["start"], c.attrs["step"]
    return c.builder.extract_slice(c.operands[0], offsets, c.type.shape, steps)


def lower_reshape(c: NodeContext) -> ir.Value:
    return c.builder.reshape(c.operands[0], c.type.shape)


def lower_concat(c: NodeContext) -> ir.Value:
    """Insert each operand into its slab of an empty result (`tensor.insert_slice`)."""
    b, dim = c.builder, c.attrs["dim"]
    out, offset = b.empty(c.type.shape, c.type.dtype), 0
    for value, t in zip(c.operands, c.operand_types):
        offsets = [0] * c.type.rank
        offsets[dim] = offset
        out = b.insert_slice(value, out, offsets)
        offset += t.shape[dim]
    return out


def lower_pad(c: NodeContext) -> ir.Value:
    """`tensor.pad`; negative pads crop first with `tensor.extract_slice`."""
    b = c.builder
    (x,), (xt,) = c.operands, c.operand_types
    pads = c.attrs["pads"]
    low, high = list(pads[0::2]), list(pads[1::2])
    if any(p < 0 for p in pads):
        starts = [max(0, -lo) for lo in low]
        sizes = [s - st - max(0, -hi) for s, st, hi in zip(xt.shape, starts, high)]
        x = b.extract_slice(x, starts, sizes, [1] * xt.rank)
    return b.pad(x, [max(0, p) for p in low], [max(0, p) for p in high], xt.dtype, c.attrs["value"])


# -- sources --------------------------------------------------------------------------------
def lower_full(c: NodeContext) -> ir.Value:
    return c.builder.splat(c.type.shape, c.type.dtype, c.attrs["value"])


def lower_iota(c: NodeContext) -> ir.Value:
    """start + step·i from `linalg.index`; integer arithmetic when everything is integral."""
    b, dtype = c.builder, c.type.dtype
    start, step = c.attrs["start"], c.attrs["step"]
    exact = not dtype.is_float and isinstance(start, int) and isinstance(step, int)
    work = DType.i64 if exact else (dtype if dtype.is_float else DType.f64)

    def body() -> list[ir.Value]:
        i = S.cast(b, arith.index_cast(element_type(DType.i64), b.loop_index(0)), DType.i64, work)
        value = S.add(work, b.constant(work, start), S.mul(work, b.constant(work, step), i))
        return [S.cast(b, value, work, dtype)]
    return b.map_elements([], [], c.type.shape, dtype, body)


def refuse_moe(c: NodeContext) -> ir.Value:
    raise c.error("MoE export is not supported yet (routing needs top-k and a data-dependent "
                  "scatter); export the expert region as its own graph, or lower the moe "
                  "node to dense ops before exporting")


LOWERINGS: dict[str, Lowering] = {
    **{name: lower_pointwise for name in S.POINTWISE},
    **{name: lower_reduction for name in ("sum", "mean", "amax", "amin", "prod", "any", "var")},
    "argmax": lower_argminmax, "argmin": lower_argminmax, "cumsum": lower_cumsum,
    "softmax": lower_softmax, "log_softmax": lower_softmax, "layer_norm": lower_layer_norm,
    "rms_norm": lower_rms_norm, "group_norm": lower_group_norm, "batch_norm": lower_batch_norm,
    "matmul": lower_contraction, "linear": lower_contraction, "conv": lower_contraction,
    "attention": lower_attention, "max_pool": lower_pool, "avg_pool": lower_pool,
    "embedding": lower_gather, "index_select": lower_gather, "index": lower_gather,
    "reshape": lower_reshape, "slice": lower_slice, "concat": lower_concat, "pad": lower_pad,
    **{name: lower_copy for name in ("permute", "expand", "pixel_shuffle",
                                     "pixel_unshuffle", "upsample_nearest")},
    "full": lower_full, "iota": lower_iota, "moe": refuse_moe,
}
"""Op name → lowering."""
