"""Scalar bodies: the arith / math code for one point of an op, from its `codesign.ir.scalar` body.

`PRIMS` maps each primitive (`Prim`) to an emitter, as Inductor's per-backend `ops` handler
maps a primitive to text; `emit` walks a body (loads, loop indices, affine index arithmetic,
literals, primitives) and leaves the loads to the caller, who knows where the operands live.
Arithmetic happens in the body's compute types (f32 for f16 / bf16): loads widen, a `cast`
to a half type rounds. The helpers below (`add`, `mul`, ...) pick the float or integer arith
op from the element type, for the other lowerings too.
"""

from __future__ import annotations

from typing import Callable, Sequence

from iree.compiler import ir
from iree.compiler.dialects import arith, math

from codesign.export.mlir_builder import Builder, MlirExportError, element_type
from codesign.ir.scalar import Acc, Affine, Expr, Lit, Load, Loop, Prim, compute_dtype, walk
from codesign.ir.types import DType


# -- type-directed arithmetic -------------------------------------------------------------
def add(dtype: DType, a: ir.Value, b: ir.Value) -> ir.Value:
    return arith.addf(a, b) if dtype.is_float else arith.addi(a, b)


def sub(dtype: DType, a: ir.Value, b: ir.Value) -> ir.Value:
    return arith.subf(a, b) if dtype.is_float else arith.subi(a, b)


def mul(dtype: DType, a: ir.Value, b: ir.Value) -> ir.Value:
    return arith.mulf(a, b) if dtype.is_float else arith.muli(a, b)


def div(dtype: DType, a: ir.Value, b: ir.Value) -> ir.Value:
    """True division for floats; integer division truncates (`divsi`)."""
    return arith.divf(a, b) if dtype.is_float else arith.divsi(a, b)


def maximum(dtype: DType, a: ir.Value, b: ir.Value) -> ir.Value:
    """NaN-propagating for floats, as torch.maximum and torch.amax are."""
    if dtype.is_float:
        return arith.maximumf(a, b)
    return arith.maxui(a, b) if dtype is DType.i1 else arith.maxsi(a, b)


def minimum(dtype: DType, a: ir.Value, b: ir.Value) -> ir.Value:
    if dtype.is_float:
        return arith.minimumf(a, b)
    return arith.minui(a, b) if dtype is DType.i1 else arith.minsi(a, b)


_FLOAT_PRED = {"eq": arith.CmpFPredicate.OEQ, "ne": arith.CmpFPredicate.UNE,
               "lt": arith.CmpFPredicate.OLT, "le": arith.CmpFPredicate.OLE,
               "gt": arith.CmpFPredicate.OGT, "ge": arith.CmpFPredicate.OGE}
_INT_PRED = {"eq": arith.CmpIPredicate.eq, "ne": arith.CmpIPredicate.ne,
             "lt": arith.CmpIPredicate.slt, "le": arith.CmpIPredicate.sle,
             "gt": arith.CmpIPredicate.sgt, "ge": arith.CmpIPredicate.sge}
_BOOL_PRED = {**_INT_PRED, "lt": arith.CmpIPredicate.ult, "le": arith.CmpIPredicate.ule,
              "gt": arith.CmpIPredicate.ugt, "ge": arith.CmpIPredicate.uge}


def compare(dtype: DType, pred: str, a: ir.Value, b: ir.Value) -> ir.Value:
    """An i1 comparison; `ne` is unordered for floats (NaN != NaN), the rest ordered."""
    if dtype.is_float:
        return arith.cmpf(_FLOAT_PRED[pred], a, b)
    return arith.cmpi((_BOOL_PRED if dtype is DType.i1 else _INT_PRED)[pred], a, b)


def truthy(b: Builder, dtype: DType, value: ir.Value) -> ir.Value:
    """The i1 `value != 0`."""
    return value if dtype is DType.i1 else compare(dtype, "ne", value, b.constant(dtype, 0))


def cast(b: Builder, value: ir.Value, src: DType, dst: DType) -> ir.Value:
    """Convert one scalar as `Tensor.to(dtype)` does (floats round, float→int truncates)."""
    if src is dst:
        return value
    target = element_type(dst)
    if dst is DType.i1:
        return truthy(b, src, value)
    if src.is_float and dst.is_float:
        if src.itemsize == dst.itemsize:  # f16 <-> bf16: go through f32
            value, src = arith.extf(ir.F32Type.get(), value), DType.f32
        return (arith.extf(target, value) if dst.itemsize > src.itemsize
                else arith.truncf(target, value))
    if dst.is_float:
        return arith.uitofp(target, value) if src is DType.i1 else arith.sitofp(target, value)
    if src.is_float:
        return arith.fptosi(target, value)
    if src is DType.i1:
        return arith.extui(target, value)
    return arith.extsi(target, value) if dst.itemsize > src.itemsize else arith.trunci(target, value)


# -- one emitter per primitive: (builder, compute type of the first operand, operands) ---------
Emit = Callable[[Builder, DType, Sequence[ir.Value]], ir.Value]


def _typed(fn: Callable[..., ir.Value]) -> Emit:
    return lambda b, t, args: fn(t, *args)


def _by_kind(on_float: Callable[..., ir.Value], on_int: Callable[..., ir.Value]) -> Emit:
    return lambda b, t, args: (on_float if t.is_float else on_int)(*args)


def _float(fn: Callable[..., ir.Value]) -> Emit:
    return lambda b, t, args: fn(*args)


def _compare(pred: str) -> Emit:
    return lambda b, t, args: compare(t, pred, *args)


PRIMS: dict[Prim, Emit] = {
    Prim.add: _typed(add), Prim.sub: _typed(sub), Prim.mul: _typed(mul), Prim.div: _typed(div),
    Prim.fmod: _by_kind(arith.remf, arith.remsi),  # truncated: the dividend's sign
    Prim.neg: lambda b, t, args: arith.negf(*args) if t.is_float else arith.subi(b.constant(t, 0), *args),
    Prim.abs: _by_kind(math.absf, math.absi),
    Prim.maximum: _typed(maximum), Prim.minimum: _typed(minimum),
    Prim.floor: _by_kind(math.floor, lambda x: x), Prim.trunc: _by_kind(math.trunc, lambda x: x),
    Prim.pow: _by_kind(math.powf, math.ipowi),
    Prim.exp: _float(math.exp), Prim.log: _float(math.log), Prim.sqrt: _float(math.sqrt),
    Prim.rsqrt: _float(math.rsqrt), Prim.tanh: _float(math.tanh), Prim.erf: _float(math.erf),
    Prim.sin: _float(math.sin), Prim.cos: _float(math.cos),
    Prim.sigmoid: lambda b, t, args: arith.divf(
        b.constant(t, 1.0), arith.addf(b.constant(t, 1.0), math.exp(arith.negf(*args)))),
    **{p: _compare(p.value) for p in (Prim.eq, Prim.ne, Prim.lt, Prim.le, Prim.gt, Prim.ge)},
    Prim.logical_and: _float(arith.andi), Prim.logical_or: _float(arith.ori),
    Prim.logical_not: lambda b, t, args: arith.xori(*args, b.constant(DType.i1, 1)),
    Prim.select: _float(arith.select),
}
"""Primitive → emitter (`cast` is `emit`'s own: it needs the target type)."""


def apply(b: Builder, prim: Prim, dtype: DType, args: Sequence[ir.Value]) -> ir.Value:
    """`prim(args)`, the operands in compute type `dtype` (the first's)."""
    try:
        fn = PRIMS[prim]
    except KeyError:
        raise MlirExportError(f"scalar primitive {prim.value!r} has no MLIR emitter; add one to "
                              f"codesign/export/mlir_scalar.py (PRIMS)") from None
    return fn(b, dtype, args)


Loader = Callable[[Load, Sequence[ir.Value] | None, ir.Value | None], ir.Value]
"""(load, its coordinates as i64 or None, its i1 validity or None) -> the element, of load.dtype."""


def emit(b: Builder, expr: Expr, load: Loader | None = None, acc: ir.Value | None = None) -> ir.Value:
    """`expr` at the current point of a `linalg.generic` body, in compute type.

    `load` reads operands (through their maps or at the given coordinates); `acc` is the
    accumulator inside a reduction's finalize. Shared sub-expressions are emitted once.
    """
    values: dict[int, ir.Value] = {}
    i64 = element_type(DType.i64)
    for x in walk(expr):
        t = compute_dtype(x.dtype)
        if isinstance(x, Lit):
            v = b.constant(t, x.value)
        elif isinstance(x, Loop):
            v = cast(b, arith.index_cast(i64, b.loop_index(x.dim)), DType.i64, t)
        elif isinstance(x, Affine):
            v = cast(b, arith.index_cast(i64, b.index_of(x.expr)), DType.i64, t)
        elif isinstance(x, Acc):
            if acc is None:
                raise MlirExportError("a body reads the accumulator outside a reduction's finalize")
            v = acc
        elif isinstance(x, Load):
            if load is None:
                raise MlirExportError(f"a finalize reads operand {x.operand}; only the accumulator is there")
            index = None if x.index is None else [values[id(i)] for i in x.index]
            valid = None if x.valid is None else values[id(x.valid)]
            v = cast(b, load(x, index, valid), x.dtype, t)
        elif x.prim is Prim.cast:
            (a,) = x.args
            rounded = cast(b, values[id(a)], compute_dtype(a.dtype), x.dtype)
            v = cast(b, rounded, x.dtype, t)
        else:
            v = apply(b, x.prim, compute_dtype(x.args[0].dtype), [values[id(a)] for a in x.args])
        values[id(x)] = v
    return values[id(expr)]
