"""Reductions over a set of dims (`sum`, `mean`, `amax`, `var`, ...).

The iteration domain is the operand's shape; reduced dims are reduction loops. With
`keepdim=false` the result map drops them, with `keepdim=true` it pins them to 0.
"""

from __future__ import annotations

import math
from math import prod
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from codesign.ir.affine import AffineMap, Const, Dim
from codesign.ir.ops.registry import (AttrSpec, Call, IterDim, IterKind, OpDef, OpKind,
                                      ShapeError, Structure, Template, Trait, register)
from codesign.ir.scalar import Acc, Combiner, Load, Prim, apply, lit
from codesign.ir.types import DType, TensorType
from codesign.lazy import LazyModule, torch_fn

if TYPE_CHECKING:
    import torch
else:
    torch = LazyModule("torch")

DIMS = AttrSpec((tuple,), required=True, doc="reduced dims, non-negative, ascending")
KEEPDIM = AttrSpec((bool,), default=False)


def check_dims(dims: object, rank: int, op: str) -> tuple[int, ...]:
    if not isinstance(dims, tuple) or not all(isinstance(d, int) for d in dims):
        raise ShapeError(f"{op}: dims must be a list of ints, got {dims!r}")
    if any(d < 0 or d >= rank for d in dims) or len(set(dims)) != len(dims):
        raise ShapeError(f"{op}: dims {list(dims)} out of range for rank {rank}")
    return dims


def reduced_shape(shape: Sequence[int], dims: Sequence[int], keepdim: bool) -> tuple[int, ...]:
    if keepdim:
        return tuple(1 if i in dims else s for i, s in enumerate(shape))
    return tuple(s for i, s in enumerate(shape) if i not in dims)


def reduction_structure(operand: TensorType, dims: Sequence[int], keepdim: bool,
                        body: str, combiner: Combiner | None = None) -> Structure:
    rank = operand.rank
    domain = tuple(IterDim(s, IterKind.reduction if i in dims else IterKind.parallel)
                   for i, s in enumerate(operand.shape))
    if keepdim:
        result = [Const(0) if i in dims else Dim(i) for i in range(rank)]
    else:
        result = [Dim(i) for i in range(rank) if i not in dims]
    return Structure(domain, (AffineMap.identity(rank),), AffineMap(rank, tuple(result)), body,
                     Load(0, operand.dtype), combiner)


def _define(name: str, run: Callable[[torch.Tensor, tuple[int, ...], bool, Mapping], torch.Tensor],
            *, result_dtype: DType | None = None, float_only: bool = False,
            extra_attrs: Mapping[str, AttrSpec] | None = None,
            combiner: Callable[[TensorType, Mapping[str, object]], Combiner] | None = None,
            template: Template = Template.reduce) -> OpDef:
    def infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
        (x,) = operands
        dims = check_dims(attrs["dims"], x.rank, name)
        if float_only and not x.dtype.is_float:
            raise ShapeError(f"{name} needs a floating-point operand, got {x.dtype.value}")
        return TensorType(reduced_shape(x.shape, dims, bool(attrs["keepdim"])), result_dtype or x.dtype)

    def run_call(call: Call) -> torch.Tensor:
        dims, keepdim = tuple(call.attrs["dims"]), bool(call.attrs["keepdim"])
        x = call.args[0]
        out = run(x, dims, keepdim, call.attrs) if dims else x.clone()
        return out.to(call.type.dtype.torch).reshape(call.type.shape)

    def structure(ops: Sequence[TensorType], res: TensorType, attrs: Mapping[str, object]) -> Structure:
        return reduction_structure(ops[0], tuple(attrs["dims"]), bool(attrs["keepdim"]), name,
                                   combiner(ops[0], attrs) if combiner else None)

    return register(OpDef(
        name=name, kind=OpKind.reduction, min_operands=1, max_operands=1, infer=infer,
        template=template, traits=frozenset({Trait.anchor}),
        run=run_call, structure=structure,
        flops=lambda ops, res, attrs: ops[0].numel,
        attrs={"dims": DIMS, "keepdim": KEEPDIM, **(extra_attrs or {})}))


def reduced_count(x: TensorType, attrs: Mapping[str, object]) -> int:
    """How many elements each output point combines."""
    return prod(x.shape[d] for d in attrs["dims"])


def _mean(x: TensorType, attrs: Mapping[str, object]) -> Combiner:
    acc = Combiner(Prim.add, 0).accumulator(x.dtype)
    return Combiner(Prim.add, 0, apply(Prim.div, Acc(acc), lit(float(max(reduced_count(x, attrs), 1)), acc)))


def _extreme(prim: Prim, identity: float) -> Callable[[TensorType, Mapping[str, object]], Combiner]:
    """max / min: identity -inf / +inf for floats, the type's extreme for integers."""
    def combiner(x: TensorType, attrs: Mapping[str, object]) -> Combiner:
        if x.dtype.is_float:
            return Combiner(prim, identity)
        if x.dtype is DType.i1:
            return Combiner(Prim.logical_or if prim is Prim.maximum else Prim.logical_and, identity > 0)
        low, high = x.dtype.int_range
        return Combiner(prim, low if identity < 0 else high)
    return combiner


_define("sum", lambda x, d, k, a: torch.sum(x, d, keepdim=k), combiner=lambda x, a: Combiner(Prim.add, 0))
_define("mean", lambda x, d, k, a: torch.mean(x, d, keepdim=k), float_only=True, combiner=_mean)
_define("amax", lambda x, d, k, a: torch.amax(x, d, keepdim=k), combiner=_extreme(Prim.maximum, -math.inf))
_define("amin", lambda x, d, k, a: torch.amin(x, d, keepdim=k), combiner=_extreme(Prim.minimum, math.inf))
_define("prod", lambda x, d, k, a: _prod(x, d, k), combiner=lambda x, a: Combiner(Prim.mul, 1))
_define("any", lambda x, d, k, a: torch.any(x, d, keepdim=k), result_dtype=DType.i1,
        combiner=lambda x, a: Combiner(Prim.logical_or, False))
_define("var", lambda x, d, k, a: torch.var(x, d, correction=a["correction"], keepdim=k),
        float_only=True, extra_attrs={"correction": AttrSpec((int, float), default=1)},
        template=Template.variance)


def _prod(x: torch.Tensor, dims: tuple[int, ...], keepdim: bool) -> torch.Tensor:
    for d in sorted(dims, reverse=True):
        x = torch.prod(x, d, keepdim=keepdim)
    return x


def _arg_infer(name: str):
    def infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
        (x,) = operands
        dims = check_dims((attrs["dim"],), x.rank, name)
        return TensorType(reduced_shape(x.shape, dims, bool(attrs["keepdim"])), DType.i64)
    return infer


for _name, _fn, _traits in (("argmax", torch_fn("argmax"), {Trait.maximizing}), ("argmin", torch_fn("argmin"), set())):
    register(OpDef(
        name=_name, kind=OpKind.reduction, min_operands=1, max_operands=1,
        infer=_arg_infer(_name), template=Template.argminmax, traits=frozenset(_traits),
        run=lambda call, fn=_fn: fn(call.args[0], call.attrs["dim"], keepdim=call.attrs["keepdim"]),
        structure=lambda ops, res, at, n=_name: reduction_structure(ops[0], (at["dim"],), bool(at["keepdim"]), n),
        flops=lambda ops, res, attrs: ops[0].numel,
        attrs={"dim": AttrSpec((int,), required=True), "keepdim": KEEPDIM}))


def _cumsum_infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
    check_dims((attrs["dim"],), operands[0].rank, "cumsum")
    return operands[0]


register(OpDef(
    name="cumsum", kind=OpKind.reduction, min_operands=1, max_operands=1, infer=_cumsum_infer,
    template=Template.scan,
    run=lambda call: torch.cumsum(call.args[0], call.attrs["dim"]).to(call.type.dtype.torch),
    structure=lambda ops, res, at: Structure(
        tuple(IterDim(s) for s in res.shape) + (IterDim(res.shape[at["dim"]], IterKind.reduction),),
        (AffineMap.of(res.rank + 1, [Dim(res.rank) if i == at["dim"] else Dim(i) for i in range(res.rank)]),),
        AffineMap.of(res.rank + 1, [Dim(i) for i in range(res.rank)]), "cumsum"),
    flops=lambda ops, res, attrs: res.numel,
    attrs={"dim": AttrSpec((int,), required=True)}, doc="inclusive prefix sum along dim"))
