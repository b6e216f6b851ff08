"""Pointwise ops: one scalar body applied at every point, with numpy broadcasting.

Operands of an arithmetic op share one element type (capture inserts `cast`s where torch
would promote); comparisons yield `i1`. A broadcast operand reads through a map that drops
or pins to 0 the dims it lacks, so broadcasting costs nothing but index arithmetic.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from codesign.ir.affine import AffineMap, Const, Dim
from codesign.ir.ops.registry import (AttrSpec, Call, IterDim, OpDef, OpKind, ShapeError,
                                      Structure, elementwise_flops, register)
from codesign.ir.types import DType, TensorType


def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...]:
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for axis in range(rank):
        sizes = {s[len(s) - rank + axis] for s in shapes if len(s) - rank + axis >= 0}
        sizes.discard(1)
        if len(sizes) > 1:
            raise ShapeError(f"shapes {' and '.join(str(list(s)) for s in shapes)} do not broadcast")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def broadcast_map(operand: Sequence[int], result: Sequence[int]) -> AffineMap:
    """Map from the result's index space to a (right-aligned) broadcast operand."""
    offset = len(result) - len(operand)
    exprs = [Const(0) if size == 1 and result[offset + i] != 1 else Dim(offset + i)
             for i, size in enumerate(operand)]
    return AffineMap(len(result), tuple(exprs))


def pointwise_structure(operands: Sequence[TensorType], result: TensorType,
                        attrs: Mapping[str, object], body: str) -> Structure:
    return Structure(tuple(IterDim(s) for s in result.shape),
                     tuple(broadcast_map(t.shape, result.shape) for t in operands),
                     AffineMap.identity(result.rank), body)


def same_dtype(operands: Sequence[TensorType], op: str) -> DType:
    """The one element type all operands share (ops never promote; capture inserts casts)."""
    dtypes = {t.dtype for t in operands}
    if len(dtypes) != 1:
        raise ShapeError(f"{op} needs operands of one element type, got "
                         f"{', '.join(sorted(d.value for d in dtypes))}; insert a cast")
    return dtypes.pop()


def _define(name: str, arity: int, run: Callable[..., torch.Tensor], *,
            result_dtype: DType | None = None, float_only: bool = False, flops: int = 1,
            attrs: Mapping[str, AttrSpec] | None = None, doc: str = "") -> OpDef:
    def infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
        dtype = same_dtype(operands, name) if arity > 1 else operands[0].dtype
        if float_only and not dtype.is_float:
            raise ShapeError(f"{name} needs a floating-point operand, got {dtype.value}")
        shape = broadcast_shapes(*(t.shape for t in operands))
        return TensorType(shape, result_dtype or dtype)

    def run_call(call: Call) -> torch.Tensor:
        out = run(*call.args, **dict(call.attrs))
        return out.to(call.type.dtype.torch).expand(call.type.shape)

    return register(OpDef(
        name=name, kind=OpKind.pointwise, min_operands=arity, max_operands=arity,
        infer=infer, run=run_call,
        structure=lambda ops, res, at: pointwise_structure(ops, res, at, name),
        flops=elementwise_flops(flops), attrs=attrs or {}, doc=doc))


# -- unary -------------------------------------------------------------------------------
_define("neg", 1, torch.neg)
_define("abs", 1, torch.abs)
_define("exp", 1, torch.exp, float_only=True)
_define("log", 1, torch.log, float_only=True)
_define("sqrt", 1, torch.sqrt, float_only=True)
_define("rsqrt", 1, torch.rsqrt, float_only=True)
_define("reciprocal", 1, torch.reciprocal, float_only=True)
_define("tanh", 1, torch.tanh, float_only=True)
_define("sigmoid", 1, torch.sigmoid, float_only=True)
_define("erf", 1, torch.erf, float_only=True)
_define("sin", 1, torch.sin, float_only=True)
_define("cos", 1, torch.cos, float_only=True)
_define("floor", 1, torch.floor)
_define("relu", 1, torch.relu)
_define("silu", 1, F.silu, float_only=True, flops=4)
_define("gelu", 1, lambda x, approximate="none": F.gelu(x, approximate=approximate),
        float_only=True, flops=8,
        attrs={"approximate": AttrSpec((str,), default="none", doc="'none' (erf) or 'tanh'")})
_define("logical_not", 1, torch.logical_not, result_dtype=DType.i1)
_define("clamp", 1, lambda x, min=None, max=None: torch.clamp(x, min=min, max=max), flops=2,
        attrs={"min": AttrSpec((int, float, type(None))), "max": AttrSpec((int, float, type(None)))})
_define("tril", 1, lambda x, diagonal=0: torch.tril(x, diagonal),
        attrs={"diagonal": AttrSpec((int,), default=0)}, doc="zero above the diagonal")
_define("triu", 1, lambda x, diagonal=0: torch.triu(x, diagonal),
        attrs={"diagonal": AttrSpec((int,), default=0)}, doc="zero below the diagonal")


def _cast_infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
    try:
        dtype = DType(attrs["dtype"])
    except ValueError:
        raise ShapeError(f"cast to unknown element type {attrs['dtype']!r}") from None
    return TensorType(operands[0].shape, dtype)


register(OpDef(
    name="cast", kind=OpKind.pointwise, min_operands=1, max_operands=1, infer=_cast_infer,
    run=lambda call: call.args[0].to(call.type.dtype.torch),
    structure=lambda ops, res, at: pointwise_structure(ops, res, at, "cast"),
    flops=elementwise_flops(0), attrs={"dtype": AttrSpec((str,), required=True)},
    doc="convert the element type (round to nearest even, as torch does)"))

# -- binary ------------------------------------------------------------------------------
_define("add", 2, torch.add)
_define("sub", 2, torch.sub)
_define("mul", 2, torch.mul)
_define("div", 2, lambda a, b, rounding_mode="none":
        torch.div(a, b, rounding_mode=None if rounding_mode == "none" else rounding_mode),
        attrs={"rounding_mode": AttrSpec((str,), default="none", doc="'none', 'floor' or 'trunc'")})
_define("remainder", 2, torch.remainder)
_define("pow", 2, torch.pow, flops=2)
_define("maximum", 2, torch.maximum)
_define("minimum", 2, torch.minimum)
_define("eq", 2, torch.eq, result_dtype=DType.i1)
_define("ne", 2, torch.ne, result_dtype=DType.i1)
_define("lt", 2, torch.lt, result_dtype=DType.i1)
_define("le", 2, torch.le, result_dtype=DType.i1)
_define("gt", 2, torch.gt, result_dtype=DType.i1)
_define("ge", 2, torch.ge, result_dtype=DType.i1)
_define("logical_and", 2, torch.logical_and, result_dtype=DType.i1)
_define("logical_or", 2, torch.logical_or, result_dtype=DType.i1)


# -- ternary -----------------------------------------------------------------------------
def _where_infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
    cond, a, b = operands
    if cond.dtype is not DType.i1:
        raise ShapeError(f"where needs an i1 condition, got {cond.dtype.value}")
    dtype = same_dtype((a, b), "where")
    return TensorType(broadcast_shapes(cond.shape, a.shape, b.shape), dtype)


register(OpDef(
    name="where", kind=OpKind.pointwise, min_operands=3, max_operands=3, infer=_where_infer,
    run=lambda call: torch.where(*call.args).expand(call.type.shape),
    structure=lambda ops, res, at: pointwise_structure(ops, res, at, "where"),
    flops=elementwise_flops(1), doc="select a where cond else b"))
