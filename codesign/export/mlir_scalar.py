"""Scalar bodies: the arith / math code for one element of a pointwise op.

`POINTWISE` maps each pointwise op name to an emitter, as Inductor's per-backend op table
maps an op to text. Emitters run inside a `linalg.generic` body and follow the reference
semantics in `codesign/ir/ops/pointwise.py` (torch): comparisons give i1, `remainder`
takes the divisor's sign, integer `div` truncates. The helpers below (`add`, `mul`, ...)
pick the float or integer arith op from the element type, for the other lowerings too.
"""

from __future__ import annotations

import math as pymath
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from iree.compiler import ir
from iree.compiler.dialects import arith, math

from codesign.export.mlir_builder import Builder, MlirExportError, element_type
from codesign.ir.types import DType


@dataclass(frozen=True)
class ScalarCall:
    """One element's worth of a pointwise node: block arguments, types and attributes."""

    builder: Builder
    args: Sequence[ir.Value]
    operand_dtypes: Sequence[DType]
    result: DType
    attrs: Mapping[str, object]
    rank: int  # of the iteration domain, for ops that read their own index (tril)

    @property
    def dtype(self) -> DType:
        """The element type the arithmetic happens in (the first operand's)."""
        return self.operand_dtypes[0]

    def const(self, value: float | int | bool) -> ir.Value:
        return self.builder.constant(self.dtype, value)


# -- type-directed arithmetic -------------------------------------------------------------
def add(dtype: DType, a: ir.Value, b: ir.Value) -> ir.Value:
    return arith.addf(a, b) if dtype.is_float else arith.addi(a, b)


def sub(dtype: DType, a: ir.Value, b: ir.Value) -> ir.Value:
    return arith.subf(a, b) if dtype.is_float else arith.subi(a, b)


def mul(dtype: DType, a: ir.Value, b: ir.Value) -> ir.Value:
    return arith.mulf(a, b) if dtype.is_float else arith.muli(a, b)


def div(dtype: DType, a: ir.Value, b: ir.Value) -> ir.Value:
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


# -- unary ---------------------------------------------------------------------------------
def _neg(c: ScalarCall) -> ir.Value:
    (x,) = c.args
    return arith.negf(x) if c.dtype.is_float else arith.subi(c.const(0), x)


def _abs(c: ScalarCall) -> ir.Value:
    (x,) = c.args
    return math.absf(x) if c.dtype.is_float else math.absi(x)


def _floor(c: ScalarCall) -> ir.Value:
    (x,) = c.args
    return math.floor(x) if c.dtype.is_float else x


def _relu(c: ScalarCall) -> ir.Value:
    (x,) = c.args
    return maximum(c.dtype, x, c.const(0))


def _sigmoid_of(c: ScalarCall, x: ir.Value) -> ir.Value:
    one = c.const(1.0)
    return arith.divf(one, arith.addf(one, math.exp(arith.negf(x))))


def _silu(c: ScalarCall) -> ir.Value:
    (x,) = c.args
    return arith.mulf(x, _sigmoid_of(c, x))


def _gelu(c: ScalarCall) -> ir.Value:
    """Exact: x·Φ(x) via erf; 'tanh': the tanh approximation, as torch's GELU."""
    (x,) = c.args
    half, one = c.const(0.5), c.const(1.0)
    if c.attrs["approximate"] == "tanh":
        cube = arith.mulf(arith.mulf(x, x), x)
        inner = arith.mulf(c.const(pymath.sqrt(2.0 / pymath.pi)),
                           arith.addf(x, arith.mulf(c.const(0.044715), cube)))
        return arith.mulf(arith.mulf(half, x), arith.addf(one, math.tanh(inner)))
    if c.attrs["approximate"] != "none":
        raise MlirExportError(f"gelu approximate={c.attrs['approximate']!r} has no lowering; "
                              f"use 'none' or 'tanh'")
    phi = arith.addf(one, math.erf(arith.mulf(x, c.const(pymath.sqrt(0.5)))))
    return arith.mulf(arith.mulf(half, x), phi)


def _logical_not(c: ScalarCall) -> ir.Value:
    (x,) = c.args
    return arith.xori(truthy(c.builder, c.dtype, x), c.builder.constant(DType.i1, 1))


def _clamp(c: ScalarCall) -> ir.Value:
    (x,) = c.args
    if c.attrs["min"] is not None:
        x = maximum(c.dtype, x, c.const(c.attrs["min"]))
    if c.attrs["max"] is not None:
        x = minimum(c.dtype, x, c.const(c.attrs["max"]))
    return x


def _triangle(keep_lower: bool) -> Callable[[ScalarCall], ir.Value]:
    """tril keeps col - row <= diagonal, triu keeps col - row >= diagonal; zero elsewhere."""
    def emit(c: ScalarCall) -> ir.Value:
        (x,) = c.args
        b = c.builder
        offset = arith.subi(b.loop_index(c.rank - 1), b.loop_index(c.rank - 2))
        pred = arith.CmpIPredicate.sle if keep_lower else arith.CmpIPredicate.sge
        keep = arith.cmpi(pred, offset, b.index_constant(c.attrs["diagonal"]))
        return arith.select(keep, x, c.const(0))
    return emit


def _unary_math(fn: Callable[[ir.Value], ir.Value]) -> Callable[[ScalarCall], ir.Value]:
    return lambda c: fn(c.args[0])


# -- binary --------------------------------------------------------------------------------
def _div(c: ScalarCall) -> ir.Value:
    """torch.div: true division (integers: truncated), or floor / trunc rounding."""
    a, b = c.args
    mode = c.attrs["rounding_mode"]
    if not c.dtype.is_float:
        return arith.floordivsi(a, b) if mode == "floor" else arith.divsi(a, b)
    q = arith.divf(a, b)
    return {"none": q, "floor": math.floor(q), "trunc": math.trunc(q)}[mode]


def _remainder(c: ScalarCall) -> ir.Value:
    """Python-style modulo: the result takes the sign of the divisor."""
    a, b = c.args
    r = arith.remf(a, b) if c.dtype.is_float else arith.remsi(a, b)
    zero = c.const(0)
    nonzero = compare(c.dtype, "ne", r, zero)
    signs_differ = arith.xori(compare(c.dtype, "lt", r, zero), compare(c.dtype, "lt", b, zero))
    return arith.select(arith.andi(nonzero, signs_differ), add(c.dtype, r, b), r)


def _pow(c: ScalarCall) -> ir.Value:
    a, b = c.args
    return math.powf(a, b) if c.dtype.is_float else math.ipowi(a, b)


def _binary(fn: Callable[[DType, ir.Value, ir.Value], ir.Value]) -> Callable[[ScalarCall], ir.Value]:
    return lambda c: fn(c.dtype, *c.args)


def _compare(pred: str) -> Callable[[ScalarCall], ir.Value]:
    return lambda c: compare(c.dtype, pred, *c.args)


def _logical(fn: Callable[[ir.Value, ir.Value], ir.Value]) -> Callable[[ScalarCall], ir.Value]:
    return lambda c: fn(*(truthy(c.builder, c.dtype, v) for v in c.args))


def _where(c: ScalarCall) -> ir.Value:
    cond, a, b = c.args
    return arith.select(cond, a, b)


def _cast(c: ScalarCall) -> ir.Value:
    return cast(c.builder, c.args[0], c.dtype, c.result)


POINTWISE: dict[str, Callable[[ScalarCall], ir.Value]] = {
    "neg": _neg, "abs": _abs, "floor": _floor, "relu": _relu,
    "exp": _unary_math(math.exp), "log": _unary_math(math.log), "sqrt": _unary_math(math.sqrt),
    "rsqrt": _unary_math(math.rsqrt), "tanh": _unary_math(math.tanh),
    "erf": _unary_math(math.erf), "sin": _unary_math(math.sin), "cos": _unary_math(math.cos),
    "reciprocal": lambda c: arith.divf(c.const(1.0), c.args[0]),
    "sigmoid": lambda c: _sigmoid_of(c, c.args[0]),
    "silu": _silu, "gelu": _gelu, "logical_not": _logical_not, "clamp": _clamp,
    "tril": _triangle(keep_lower=True), "triu": _triangle(keep_lower=False), "cast": _cast,
    "add": _binary(add), "sub": _binary(sub), "mul": _binary(mul), "div": _div,
    "remainder": _remainder, "pow": _pow, "maximum": _binary(maximum), "minimum": _binary(minimum),
    "eq": _compare("eq"), "ne": _compare("ne"), "lt": _compare("lt"), "le": _compare("le"),
    "gt": _compare("gt"), "ge": _compare("ge"),
    "logical_and": _logical(arith.andi), "logical_or": _logical(arith.ori),
    "where": _where,
}
"""Pointwise op name → scalar emitter."""

