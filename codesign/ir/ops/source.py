"""Ops that read no tensor: constants and index ranges."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

from codesign.ir.affine import AffineMap
from codesign.ir.ops.registry import (AttrSpec, IterDim, OpDef, OpKind, Structure, Template,
                                      Trait, no_flops, register)
from codesign.ir.scalar import BodyFn, Expr, Loop, Prim, apply, cast, lit
from codesign.ir.types import DType, TensorType
from codesign.lazy import LazyModule

if TYPE_CHECKING:
    import torch
else:
    torch = LazyModule("torch")


def _source_structure(name: str, body: BodyFn):
    return lambda ops, res, at: Structure(tuple(IterDim(s) for s in res.shape), (),
                                          AffineMap.identity(res.rank), name, body(ops, res, at))


def _iota_body(ops, res: TensorType, attrs) -> Expr:
    """start + step·i as the reference computes it (f64), or in i64 for an integer range."""
    start, step = attrs["start"], attrs["step"]
    exact = isinstance(start, int) and isinstance(step, int) and not res.dtype.is_float
    work = DType.i64 if exact else DType.f64
    i = cast(Loop(0), work) if res.rank else lit(0, work)
    return cast(apply(Prim.add, lit(start, work), apply(Prim.mul, lit(step, work), i)), res.dtype)


def _full_infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> None:
    """A source op's type is the node's own: there is nothing to infer it from."""
    return None


FULL = register(OpDef(
    name="full", kind=OpKind.source, min_operands=0, max_operands=0, infer=_full_infer,
    run=lambda call: torch.full(call.type.shape, call.attrs["value"], dtype=call.type.dtype.torch),
    structure=_source_structure("full", lambda ops, res, at: lit(at["value"], res.dtype)), flops=no_flops,
    template=Template.elementwise, traits=frozenset({Trait.quiet}),
    attrs={"value": AttrSpec((int, float, bool), required=True)},
    doc="a tensor of the node's type filled with value (a scalar when the type is rank 0)"))

register(OpDef(
    name="iota", kind=OpKind.source, min_operands=0, max_operands=0, infer=_full_infer,
    run=lambda call: (call.attrs["start"] + call.attrs["step"] *
                      torch.arange(call.type.shape[0], dtype=torch.float64)).to(call.type.dtype.torch),
    structure=_source_structure("iota", _iota_body), flops=no_flops,
    template=Template.elementwise, traits=frozenset({Trait.quiet}),
    attrs={"start": AttrSpec((int, float), default=0), "step": AttrSpec((int, float), default=1)},
    doc="1-d: start + step·i (torch.arange)"))

SOURCE_OPS = frozenset({"full", "iota"})
