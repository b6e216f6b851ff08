"""Tensor-level building blocks shared by several lowerings: reduce, cast, softmax.

Each is a short sequence of `linalg.generic`s over static shapes. Half-precision inputs
are widened to f32 before any accumulation (`codesign.ir.scalar.compute_dtype`), as torch
accumulates sums, norms and softmax in f32 on CPU; the caller narrows the result back.
"""

from __future__ import annotations

from typing import Callable, Sequence

from iree.compiler import ir
from iree.compiler.dialects import arith, math

from codesign.export import mlir_scalar as S
from codesign.export.mlir_builder import Builder
from codesign.ir.affine import AffineMap, Dim
from codesign.ir.ops.registry import IterKind
from codesign.ir.scalar import lowest
from codesign.ir.types import DType

Combine = Callable[[ir.Value, ir.Value], ir.Value]  # (element, accumulator) -> accumulator


def identity(rank: int) -> AffineMap:
    return AffineMap.identity(rank)


def kept_map(rank: int, dims: Sequence[int]) -> AffineMap:
    """From a domain of `rank` loops to a tensor that lacks the reduced `dims`."""
    return AffineMap(rank, tuple(Dim(i) for i in range(rank) if i not in dims))


def kept_shape(shape: Sequence[int], dims: Sequence[int]) -> list[int]:
    return [s for i, s in enumerate(shape) if i not in dims]


def cast_tensor(b: Builder, value: ir.Value, src: DType, dst: DType) -> ir.Value:
    """Elementwise `Tensor.to(dst)`; no op when the types agree."""
    if src is dst:
        return value
    shape = list(value.type.shape)
    return b.map_elements([value], [identity(len(shape))], shape, dst,
                          lambda x: [S.cast(b, x, src, dst)])


def reduce(b: Builder, value: ir.Value, dtype: DType, dims: Sequence[int], init: float | int | bool,
           combine: Combine, result_dtype: DType | None = None,
           extra: Sequence[tuple[ir.Value, AffineMap]] = ()) -> ir.Value:
    """Fold `dims` of `value` away (result lacks them), starting from `init`.

    `extra` are further inputs (with their maps over `value`'s domain) that `combine`
    receives after the element, e.g. the mean when summing squared deviations.
    """
    shape = list(value.type.shape)
    rank = len(shape)
    out_dtype = result_dtype or dtype
    init_tensor = b.filled(kept_shape(shape, dims), out_dtype, init)
    iterators = [IterKind.reduction if i in dims else IterKind.parallel for i in range(rank)]
    (result,) = b.generic([value, *(v for v, _ in extra)], [init_tensor],
                          [identity(rank), *(m for _, m in extra), kept_map(rank, dims)],
                          iterators, lambda *args: [combine(*args)])
    return result


def reduce_sum(b: Builder, value: ir.Value, dtype: DType, dims: Sequence[int]) -> ir.Value:
    return reduce(b, value, dtype, dims, 0, lambda x, acc: S.add(dtype, x, acc))


def reduce_max(b: Builder, value: ir.Value, dtype: DType, dims: Sequence[int]) -> ir.Value:
    return reduce(b, value, dtype, dims, lowest(dtype), lambda x, acc: S.maximum(dtype, x, acc))


def scale(b: Builder, value: ir.Value, dtype: DType, factor: float) -> ir.Value:
    """`value * factor` elementwise (a mean is a sum scaled by 1/count)."""
    shape = list(value.type.shape)
    return b.map_elements([value], [identity(len(shape))], shape, dtype,
                          lambda x: [_mul_const(b, dtype, x, factor)])


def _mul_const(b: Builder, dtype: DType, x: ir.Value, factor: float) -> ir.Value:
    return S.mul(dtype, x, b.constant(dtype, factor))


def mean(b: Builder, value: ir.Value, dtype: DType, dims: Sequence[int]) -> ir.Value:
    count = 1
    for d in dims:
        count *= value.type.shape[d]
    return scale(b, reduce_sum(b, value, dtype, dims), dtype, 1.0 / count)


def centered_square_sum(b: Builder, value: ir.Value, dtype: DType, dims: Sequence[int],
                        center: ir.Value) -> ir.Value:
    """Σ (x - center)² over `dims`; `center` lacks `dims` (two-pass variance)."""
    rank = len(value.type.shape)

    def combine(x: ir.Value, c: ir.Value, acc: ir.Value) -> ir.Value:
        dev = S.sub(dtype, x, c)
        return S.add(dtype, acc, S.mul(dtype, dev, dev))
    return reduce(b, value, dtype, dims, 0, combine, extra=[(center, kept_map(rank, dims))])


def softmax(b: Builder, x: ir.Value, dtype: DType, dim: int, log: bool = False, safe: bool = False) -> ir.Value:
    """Stable softmax along `dim`: max-reduce, exp(x - max), sum-reduce, divide.

    `log=True` gives log_softmax as (x - max) - log(sum). `dtype` must be a float type in
    which to compute (widen half types first). `safe=True`: a row that is all -inf gives 0
    (SDPA's `_safe_softmax`), not NaN.
    """
    shape = list(x.type.shape)
    rank = len(shape)
    ident, kept = identity(rank), kept_map(rank, [dim])
    peak = reduce_max(b, x, dtype, [dim])
    exps = b.map_elements([x, peak], [ident, kept], shape, dtype,
                          lambda v, m: [math.exp(S.sub(dtype, v, m))])
    total = reduce_sum(b, exps, dtype, [dim])
    if log:
        return b.map_elements([x, peak, total], [ident, kept, kept], shape, dtype,
                              lambda v, m, s: [S.sub(dtype, S.sub(dtype, v, m), math.log(s))])
    if safe:
        minus_inf = b.constant(dtype, float("-inf"))
        return b.map_elements([exps, total, peak], [ident, kept, kept], shape, dtype,
                              lambda e, s, m: [arith.select(S.compare(dtype, "eq", m, minus_inf),
                                                            b.constant(dtype, 0.0), S.div(dtype, e, s))])
    return b.map_elements([exps, total], [ident, kept], shape, dtype,
                          lambda e, s: [S.div(dtype, e, s)])
