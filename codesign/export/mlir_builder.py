"""A thin, typed layer over the MLIR Python bindings for building linalg on tensors.

The lowerings speak in codesign terms (`DType`, `AffineMap`, shapes); this module turns
them into MLIR types, affine maps and ops, so that no lowering touches binding quirks
(ODS builders that return ops, opdsl helpers that return values, the `linalg.index`
name clash). Every method must run inside the `ir.Context` / `ir.Location` / insertion
point that `to_mlir` sets up.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Callable, Sequence

from iree.compiler import ir
from iree.compiler.dialects import arith, linalg, tensor

from codesign.ir.affine import Add, AffineExpr, AffineMap, Const, Dim, FloorDiv, Mod, Mul
from codesign.ir.ops.registry import IterKind
from codesign.ir.types import DType


class MlirExportError(NotImplementedError):
    """A graph (or one node of it) that the MLIR exporter cannot lower; says what to do."""


# Scalar bodies receive one block argument per input then per output; they return the
# values to yield (one per output).
Body = Callable[..., Sequence[ir.Value]]

_INT_WIDTH = {DType.i64: 64, DType.i32: 32, DType.i16: 16, DType.i8: 8, DType.i1: 1}


def element_type(dtype: DType) -> ir.Type:
    """The MLIR element type of a codesign dtype (signless integers, as linalg expects)."""
    if dtype is DType.f64:
        return ir.F64Type.get()
    if dtype is DType.f32:
        return ir.F32Type.get()
    if dtype is DType.f16:
        return ir.F16Type.get()
    if dtype is DType.bf16:
        return ir.BF16Type.get()
    if dtype in _INT_WIDTH:
        return ir.IntegerType.get_signless(_INT_WIDTH[dtype])
    raise MlirExportError(f"element type {dtype.value} has no MLIR lowering yet (u8 would need "
                          f"unsigned semantics in every body); cast to i32 or i64 first")


def tensor_type(shape: Sequence[int], dtype: DType) -> ir.RankedTensorType:
    return ir.RankedTensorType.get(list(shape), element_type(dtype))


def affine_expr(expr: AffineExpr) -> ir.AffineExpr:
    """Translate one codesign affine expression to its MLIR twin."""
    if isinstance(expr, Dim):
        return ir.AffineDimExpr.get(expr.index)
    if isinstance(expr, Const):
        return ir.AffineConstantExpr.get(expr.value)
    if isinstance(expr, Add):
        return affine_expr(expr.lhs) + affine_expr(expr.rhs)
    if isinstance(expr, Mul):
        return affine_expr(expr.expr) * ir.AffineConstantExpr.get(expr.factor)
    if isinstance(expr, FloorDiv):
        return ir.AffineExpr.get_floor_div(affine_expr(expr.expr), expr.divisor)
    if isinstance(expr, Mod):
        return affine_expr(expr.expr) % ir.AffineConstantExpr.get(expr.divisor)
    raise TypeError(f"unknown affine expression {expr!r}")


def affine_map(amap: AffineMap) -> ir.AffineMap:
    return ir.AffineMap.get(amap.num_dims, 0, [affine_expr(r) for r in amap.results])


def is_semi_affine(amap: AffineMap) -> bool:
    """True when a result uses floordiv or mod."""
    def semi(e: AffineExpr) -> bool:
        if isinstance(e, (FloorDiv, Mod)):
            return True
        if isinstance(e, Add):
            return semi(e.lhs) or semi(e.rhs)
        return isinstance(e, Mul) and semi(e.expr)
    return any(semi(r) for r in amap.results)


def iterator(kind: IterKind) -> linalg.IteratorType:
    return linalg.IteratorType.parallel if kind is IterKind.parallel else linalg.IteratorType.reduction


def substitute(amap: AffineMap, dims: dict[int, int], num_dims: int) -> AffineMap:
    """`amap` with each `Dim(k)` renamed to `Dim(dims[k])` in a domain of `num_dims` loops.

    Used to reuse one op's structure maps in the smaller domain of one of its stages
    (attention's QKᵀ stage has no `e` loop, its PV stage no `d` loop).
    """
    def rename(e: AffineExpr) -> AffineExpr:
        if isinstance(e, Dim):
            return Dim(dims[e.index])
        if isinstance(e, Add):
            return rename(e.lhs) + rename(e.rhs)
        if isinstance(e, Mul):
            return rename(e.expr) * e.factor
        if isinstance(e, FloorDiv):
            return rename(e.expr) // e.divisor
        if isinstance(e, Mod):
            return rename(e.expr) % e.divisor
        return e
    return AffineMap(num_dims, tuple(rename(r) for r in amap.results))


def shift(amap: AffineMap, offsets: Sequence[int]) -> AffineMap:
    """`amap` with `offsets[i]` added to result i: reads a tensor padded by `offsets`."""
    return AffineMap(amap.num_dims, tuple(r + o for r, o in zip(amap.results, offsets)))


@dataclass(frozen=True)
class Builder:
    """Op-building helpers; stateless apart from the active MLIR insertion point."""

    def constant(self, dtype: DType, value: float | int | bool) -> ir.Value:
        """A scalar constant of `dtype` (floats may be ±inf)."""
        et = element_type(dtype)
        if dtype.is_float:
            return arith.ConstantOp(et, ir.FloatAttr.get(et, float(value))).result
        return arith.ConstantOp(et, ir.IntegerAttr.get(et, int(value))).result

    def index_constant(self, value: int) -> ir.Value:
        return arith.ConstantOp.create_index(int(value)).result

    def splat(self, shape: Sequence[int], dtype: DType, value: float | int | bool) -> ir.Value:
        """A constant tensor with every element `value`."""
        et = element_type(dtype)
        attr = (ir.FloatAttr.get(et, float(value)) if dtype.is_float
                else ir.IntegerAttr.get(et, int(value)))
        ttype = tensor_type(shape, dtype)
        return arith.ConstantOp(ttype, ir.DenseElementsAttr.get_splat(ttype, attr)).result

    def dense(self, array) -> ir.Value:
        """A constant tensor from a numpy array (small tables only: it is inlined as hex)."""
        attr = ir.DenseElementsAttr.get(array)
        return arith.ConstantOp(attr.type, attr).result

    def empty(self, shape: Sequence[int], dtype: DType) -> ir.Value:
        return tensor.EmptyOp(list(shape), element_type(dtype)).result

    def filled(self, shape: Sequence[int], dtype: DType, value: float | int | bool) -> ir.Value:
        """An init tensor for a reduction: empty + linalg.fill with the identity `value`."""
        return linalg.fill(self.constant(dtype, value), outs=[self.empty(shape, dtype)])

    def loop_index(self, dim: int) -> ir.Value:
        """The current iteration index along `dim`, inside a generic body (`linalg.index`)."""
        return linalg.IndexOp(dim).result

    def generic(self, inputs: Sequence[ir.Value], outputs: Sequence[ir.Value],
                maps: Sequence[AffineMap], iterators: Sequence[IterKind], body: Body) -> list[ir.Value]:
        """One `linalg.generic`; `maps` are inputs' then outputs' maps, codesign-style."""
        op = linalg.GenericOp(
            result_tensors=[o.type for o in outputs], inputs=list(inputs), outputs=list(outputs),
            indexing_maps=[affine_map(m) for m in maps],
            iterator_types=[iterator(k) for k in iterators])
        block = op.regions[0].blocks.append(
            *[v.type.element_type for v in list(inputs) + list(outputs)])
        with ir.InsertionPoint(block):
            linalg.YieldOp(list(body(*block.arguments)))
        return list(op.results)

    def map_elements(self, inputs: Sequence[ir.Value], maps: Sequence[AffineMap],
                     shape: Sequence[int], dtype: DType, body: Body) -> ir.Value:
        """A parallel generic over `shape` writing a fresh tensor (the output arg is unused).

        Inputs read through a semi-affine map (floordiv / mod: pixel shuffle, upsample,
        group-norm statistics) are not generic operands: IREE cannot tile such maps unless
        its tile sizes happen to divide the divisors. Nor are inputs whose map reads a plain
        loop index along a dim of another size (a slice from 0), where linalg would take the
        dim's size as the loop's. The body computes their index with index arithmetic and
        reads them with `tensor.extract` instead, as a gather does.
        """
        rank = len(shape)

        def direct_map(value: ir.Value, amap: AffineMap) -> bool:
            return not is_semi_affine(amap) and all(size == shape[r.index] for r, size in
                                                    zip(amap.results, value.type.shape) if isinstance(r, Dim))
        direct = [i for i, (v, m) in enumerate(zip(inputs, maps)) if direct_map(v, m)]

        def full_body(*args: ir.Value) -> Sequence[ir.Value]:
            values, given = [], iter(args[:-1])
            for i, (value, amap) in enumerate(zip(inputs, maps)):
                values.append(next(given) if i in direct
                              else tensor.extract(value, [self.index_of(r) for r in amap.results]))
            return body(*values)
        (out,) = self.generic([inputs[i] for i in direct], [self.empty(shape, dtype)],
                              [*(maps[i] for i in direct), AffineMap.identity(rank)],
                              [IterKind.parallel] * rank, full_body)
        return out

    def index_of(self, expr: AffineExpr) -> ir.Value:
        """`expr` evaluated at the current loop point, as an `index` (inside a generic body).

        `mod` lowers to `remsi`, which equals floor-mod because layout indices are >= 0.
        """
        if isinstance(expr, Dim):
            return self.loop_index(expr.index)
        if isinstance(expr, Const):
            return self.index_constant(expr.value)
        if isinstance(expr, Add):
            return arith.addi(self.index_of(expr.lhs), self.index_of(expr.rhs))
        if isinstance(expr, Mul):
            return arith.muli(self.index_of(expr.expr), self.index_constant(expr.factor))
        if isinstance(expr, FloorDiv):
            return arith.floordivsi(self.index_of(expr.expr), self.index_constant(expr.divisor))
        if isinstance(expr, Mod):
            return arith.remsi(self.index_of(expr.expr), self.index_constant(expr.divisor))
        raise TypeError(f"unknown affine expression {expr!r}")

    def reshape(self, value: ir.Value, shape: Sequence[int]) -> ir.Value:
        """Row-major reshape: collapse to 1-d, then expand (both are free views)."""
        src = list(value.type.shape)
        if src == list(shape):
            return value
        et = value.type.element_type
        if src and shape:
            flat = value
            if len(src) != 1:
                flat = tensor.CollapseShapeOp(ir.RankedTensorType.get([prod(src)], et), value,
                                              [list(range(len(src)))]).result
            if len(shape) == 1:
                return flat
            return tensor.ExpandShapeOp(ir.RankedTensorType.get(list(shape), et), flat,
                                        [list(range(len(shape)))], output_shape=[],
                                        static_output_shape=list(shape)).result
        # To or from rank 0: every size is 1, so the reassociation is empty.
        if not src:
            return tensor.ExpandShapeOp(ir.RankedTensorType.get(list(shape), et), value, [],
                                        output_shape=[], static_output_shape=list(shape)).result
        return tensor.CollapseShapeOp(ir.RankedTensorType.get([], et), value, []).result

    def pad(self, value: ir.Value, low: Sequence[int], high: Sequence[int], dtype: DType,
            fill: float | int) -> ir.Value:
        """`tensor.pad` with a constant; `low`/`high` are non-negative per-dim amounts."""
        if not any(low) and not any(high):
            return value
        shape = [s + lo + hi for s, lo, hi in zip(value.type.shape, low, high)]
        op = tensor.PadOp(tensor_type(shape, dtype), value, [], [], list(low), list(high))
        block = op.regions[0].blocks.append(*[ir.IndexType.get()] * len(shape))
        with ir.InsertionPoint(block):
            tensor.YieldOp(self.constant(dtype, fill))
        return op.result

    def extract_slice(self, value: ir.Value, offsets: Sequence[int], sizes: Sequence[int],
                      steps: Sequence[int]) -> ir.Value:
        result = ir.RankedTensorType.get(list(sizes), value.type.element_type)
        return tensor.ExtractSliceOp(result, value, [], [], [], static_offsets=list(offsets),
                                     static_sizes=list(sizes), static_strides=list(steps)).result
